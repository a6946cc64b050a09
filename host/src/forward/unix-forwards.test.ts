// Unix socket forwards (unix-forwards.ts) through the engine: one host socket per guest socket, host paths it makes and
// removes, a stale socket replaced but another program's left alone, and the look at the guest socket that tells
// `forwarding` from `error` before any client connects, at setup and when SSH comes back.

import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fakeSsh, lines, logger, waitUntil } from '../../../test/helpers/forward-engine.js';
import { PortForward } from '../config/schema.js';
import { ChannelOpenError, type SshSession } from '../ssh/index.js';
import { ForwardEngine } from './engine.js';

describe('ForwardEngine unix socket forwards', () => {
  let engine: ForwardEngine | undefined;
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tether-engine-'));
  });
  afterEach(async () => {
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const make = (rules: object[], ssh: SshSession = fakeSsh) =>
    new ForwardEngine({
      ssh,
      portForwards: rules.map((r) => PortForward.parse(r)),
      maxForwards: 10,
      instanceDir: dir,
      logger,
    });

  it('gives one host socket to one guest socket: a second rule with the same path is an error, an add refused', async () => {
    engine = make([{ guestSocket: '/var/run/docker.sock' }, { guestSocket: '/run/user/1000/docker.sock' }]);
    await engine.start();
    const host = join(dir, 'docker.sock');
    expect(engine.view('unix//var/run/docker.sock')).toMatchObject({ state: 'forwarding', hostAddrs: [host] });
    expect(engine.view('unix//run/user/1000/docker.sock')).toMatchObject({
      state: 'error',
      error: expect.stringContaining(`host socket ${host} already serves forward unix//var/run/docker.sock`),
    });
    await expect(engine.add({ proto: 'unix', guestSocket: '/run/podman.sock', hostSocket: host })).rejects.toThrow(
      `host socket ${host} is already used by forward unix//var/run/docker.sock (static)`,
    );
  });

  it('refuses an added socket whose host path cannot be made, naming the host side first, and leaves nothing', async () => {
    const socket = { state: 'absent' };
    const guest = socketGuest(socket);
    engine = make([], guest.ssh);
    await engine.start();
    const deep = join(dir, 'x'.repeat(120), 'docker.sock');
    const tooLong = engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: deep });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(tooLong).rejects.toThrow(
      /^forward unix\/\/run\/a\.sock not added: cannot listen on \S+: the path is too long for a unix socket \(\d+ bytes; pick a shorter one\); guest socket \/run\/a\.sock does not exist/,
    );
    expect(existsSync(join(dir, 'x'.repeat(120)))).toBe(false);

    // A file where the socket's directory should be.
    writeFileSync(join(dir, 'file'), '');
    socket.state = 'listening';
    const blocked = engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(dir, 'file', 'b.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(blocked).rejects.toThrow(
      /not added: cannot listen on \S+\/file\/b\.sock: EEXIST: file already exists, mkdir /,
    );

    // procfs takes no new files, not even root's: EACCES, which for a socket path is no question of port privileges.
    const proc = engine.add({ proto: 'unix', guestSocket: '/run/c.sock', hostSocket: '/proc/tether-test.sock' });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(proc).rejects.toThrow(
      'forward unix//run/c.sock not added: cannot create the socket /proc/tether-test.sock: permission denied (EACCES); ' +
        'pick a host path in a directory you can write',
    );
    expect(engine.views()).toEqual([]);
  });

  it('forwards one guest socket to two host paths, and skips a rule that repeats an earlier one', async () => {
    const [first, second, third] = [join(dir, 'first.sock'), join(dir, 'second.sock'), join(dir, 'third.sock')];
    engine = make([
      { guestSocket: '/run/a.sock', hostSocket: first },
      { guestSocket: '/run/a.sock', hostSocket: second },
      { guestSocket: '/run/a.sock', hostSocket: first },
    ]);
    await engine.start();
    expect(engine.views().map((v) => [v.id, v.hostAddrs, v.state])).toEqual([
      ['unix//run/a.sock', [first], 'forwarding'],
      [`unix//run/a.sock->${second}`, [second], 'forwarding'],
    ]);
    expect(existsSync(first) && existsSync(second)).toBe(true);
    expect(
      lines.some((l) => l.msg === 'portForwards[2] repeats forward unix//run/a.sock of an earlier rule; skipped'),
    ).toBe(true);

    const added = await engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: third });
    expect(added).toMatchObject({ id: `unix//run/a.sock->${third}`, state: 'forwarding' });
    await expect(engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: third })).rejects.toThrow(
      /already/,
    );
  });

  it('makes the directories of an added socket, and removes them with it when nothing else is in them', async () => {
    engine = make([]);
    await engine.start();
    const [kept, gone] = [join(dir, 'kept'), join(dir, 'gone')];
    const a = await engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: join(kept, 'in', 'a.sock') });
    const b = await engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(gone, 'in', 'b.sock') });
    expect([a.state, b.state]).toEqual(['forwarding', 'forwarding']);
    writeFileSync(join(kept, 'note'), 'the user put this here meanwhile');
    await engine.remove(a.id);
    await engine.remove(b.id);
    expect([existsSync(join(kept, 'in')), existsSync(join(kept, 'note')), existsSync(gone)]).toEqual([
      false,
      true,
      false,
    ]);
  });

  it('leaves a socket another program serves alone (conflict), and replaces a stale one', async () => {
    const live = join(dir, 'live.sock');
    const other = net.createServer((s) => s.on('error', () => {}).end('theirs')).listen(live);
    await once(other, 'listening');
    // A socket file whose server was killed, so nothing removed it.
    const stale = join(dir, 'stale.sock');
    const killed = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(killed.signal).toBe('SIGKILL');
    expect(lstatSync(stale).isSocket()).toBe(true);
    try {
      engine = make([
        { guestSocket: '/run/a.sock', hostSocket: live },
        { guestSocket: '/run/b.sock', hostSocket: stale },
      ]);
      await engine.start();
      expect(engine.view('unix//run/a.sock')).toMatchObject({
        state: 'conflict',
        error: expect.stringContaining(`host address ${live} is in use by another process`),
      });
      expect(engine.view('unix//run/b.sock')?.state).toBe('forwarding');
      await engine.stop();
      engine = undefined;
      // The other program's socket is still there and still its own.
      expect(existsSync(live)).toBe(true);
      expect(existsSync(stale)).toBe(false);
    } finally {
      other.close();
    }
  });

  /**
   * A guest whose sshd answers streamlocal opens as `socket` says: each open waits for the test to settle it
   * (`answer`), and the look from an exec channel reports the socket's state.
   */
  function socketGuest(socket: { state: string }) {
    const opens: { resolve: (ch: { destroy(): void }) => void; reject: (err: Error) => void }[] = [];
    let destroyed = 0;
    const ssh = {
      openStreamLocal: () => new Promise((resolve, reject) => opens.push({ resolve, reject })),
      execText: async () => ({ code: 0, stdout: `user=tb\nstate=${socket.state}\n`, stderr: '' }),
    } as unknown as SshSession;
    /** Settles the pending opens as the guest socket is now. */
    const answer = () => {
      for (const o of opens.splice(0)) {
        if (socket.state === 'listening') o.resolve({ destroy: () => destroyed++ });
        else {
          const cause = Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason: 2 });
          o.reject(new ChannelOpenError(`cannot open guest socket: ${cause.message}`, cause));
        }
      }
    };
    return { ssh, opens, answer, destroyed: () => destroyed };
  }

  it('looks at the guest socket when a forward is set up: missing is an error with why before any client', async () => {
    const socket = { state: 'absent' };
    const guest = socketGuest(socket);
    engine = make([{ guestSocket: '/run/a.sock' }], guest.ssh);
    const started = engine.start();
    await waitUntil(() => guest.opens.length === 1);
    expect(engine.view('unix//run/a.sock')).toBeUndefined(); // not listed as forwarding while it is looked at
    guest.answer();
    await started;
    expect(engine.view('unix//run/a.sock')).toMatchObject({
      state: 'error',
      error: expect.stringContaining('guest socket /run/a.sock does not exist'),
      cause: 'service-down',
    });

    // An added forward to a socket that is not there yet is kept, in error; one that answers is forwarding.
    const adding = engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(dir, 'b.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    expect(await adding).toMatchObject({
      state: 'error',
      error: expect.stringContaining('/run/b.sock does not exist'),
    });
    socket.state = 'listening';
    const listening = engine.add({ proto: 'unix', guestSocket: '/run/c.sock', hostSocket: join(dir, 'c.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    expect(await listening).toMatchObject({ state: 'forwarding', error: null });
    expect(guest.destroyed()).toBe(1); // the probe's channel is closed at once
  });

  it('probes one at a time when SSH comes back, and stays suspended until the probe tells', async () => {
    const socket = { state: 'listening' };
    const guest = socketGuest(socket);
    engine = make([{ guestSocket: '/run/a.sock' }], guest.ssh);
    const started = engine.start();
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await started;
    expect(engine.view('unix//run/a.sock')?.state).toBe('forwarding');

    socket.state = 'absent'; // the service stopped while SSH was down
    for (let i = 0; i < 3; i++) {
      engine.setSshDown('connection reset');
      engine.setSshDown(null);
    }
    await waitUntil(() => guest.opens.length > 0);
    expect(guest.opens).toHaveLength(1);
    expect(engine.view('unix//run/a.sock')?.state).toBe('suspended');
    guest.answer();
    await waitUntil(() => engine?.view('unix//run/a.sock')?.state === 'error');
    expect(engine.view('unix//run/a.sock')?.error).toContain('guest socket /run/a.sock does not exist');
    expect(guest.opens).toHaveLength(0);
  });
});
