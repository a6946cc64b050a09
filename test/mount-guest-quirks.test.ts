// Mounts on guests set up the way real ones are: a login shell whose ~/.bashrc prints on startup (the output must
// not reach the SFTP server; too much of it fails the mount with a message naming the file), a mount point reached
// through a symlink (/home -> /var/home on Fedora Atomic: sshfs mounts at the resolved path, which is what tether
// must look for, and where the guest applies file events), and a mount point under `~` (the guest user's home, not a
// directory named `~`), shown resolved also for a mount its requirements hold.
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsApplier } from '../guest/src/inotify/applier.js';
import { silentLogger as guestSilentLogger } from '../guest/src/log.js';
import { loginProblem } from '../host/src/cli/doctor.js';
import { mountTable } from '../host/src/cli/render.js';
import { MountConfig } from '../host/src/config/schema.js';
import { silentLogger } from '../host/src/log.js';
import { checkMountRequirements, MountManager } from '../host/src/mount/index.js';
import { execOn } from '../host/src/ssh/exec.js';
import { guestSocketState } from '../host/src/ssh/index.js';
import {
  CHATTY_USER,
  connect,
  guest,
  guestTry,
  loginIds,
  recordingLogger,
  startMount,
  waitFor,
} from './helpers/mount-fixture.js';
import { canRunTestbed, testbedHome, useTestbed } from './helpers/testbed.js';

describe.skipIf(!canRunTestbed())('mounts on real-world guests', () => {
  const testbed = useTestbed();

  it.each(['builtin', 'openssh'] as const)(
    'mounts (%s driver) for a user whose ~/.bashrc prints on startup, and logs what was discarded',
    async (driver) => {
      const tb = testbed();
      const { logger, lines } = recordingLogger();
      const m = await startMount(tb, { driver }, { user: CHATTY_USER, logger });
      try {
        writeFileSync(join(m.location, 'hello.txt'), 'from the host\n');
        const r = await tb.exec(`cat ${m.mountPoint}/hello.txt`, { user: CHATTY_USER });
        expect(r.stdout).toBe('from the host\n');
        const warn = lines.find((l) => l.level === 40 && /printed output on startup/.test(l.msg));
        expect(warn?.output).toBe(JSON.stringify('hello from ~/.bashrc\na greeting without a newline'));
        expect(warn?.msg).toContain('~/.bashrc');
      } finally {
        await m.stop();
      }
    },
  );

  it("reads the requirement checks' answers after a greeting that ends without a newline", async () => {
    const tb = testbed();
    const client = await connect(tb, CHATTY_USER);
    try {
      // The greeting's last line and the command's first would share a line without the marker.
      expect((await execOn(client, 'echo fuse=yes')).stdout).toBe('fuse=yes\n');
      const mountPoint = join(testbedHome(tb, CHATTY_USER), 'greeted-mnt');
      const config = MountConfig.parse({ location: tmpdir(), mountPoint });
      const reqs = await checkMountRequirements(client, [config], { fix: false });
      expect(reqs.filter((r) => !r.ok)).toEqual([]);
      expect(reqs.map((r) => r.name)).toEqual(
        expect.arrayContaining([
          'sshfs in the guest',
          'user_allow_other in /etc/fuse.conf',
          `mount point ${mountPoint}`,
        ]),
      );
    } finally {
      client.end();
    }
  });

  it('mounts at a path mountinfo writes with escapes (a space, a backslash)', async () => {
    const tb = testbed();
    const m = await startMount(tb, { driver: 'builtin' }, { mountPoint: join(tb.stateDir, 'my \\mnt') });
    try {
      expect(m.manager.views()[0]).toMatchObject({ state: 'mounted', error: null });
      writeFileSync(join(m.location, 'spaced.txt'), 'seen\n');
      expect((await tb.exec(`cat '${m.mountPoint}/spaced.txt'`, { user: tb.user })).stdout).toBe('seen\n');
    } finally {
      await m.stop();
    }
  });

  it('refuses a second mount on a guest directory another mount has, written another way (~/x and /home/u/x)', async () => {
    const tb = testbed();
    const [a, b] = [mkdtempSync(join(tmpdir(), 'tether-export-a-')), mkdtempSync(join(tmpdir(), 'tether-export-b-'))];
    const configs = [
      { location: a, mountPoint: '~/same' },
      { location: b, mountPoint: join(testbedHome(tb, tb.user), 'same') },
    ].map((m) => MountConfig.parse({ driver: 'builtin', inotify: false, ...m }));
    const manager = new MountManager(configs, { logger: silentLogger() });
    const client = await connect(tb);
    try {
      await manager.start(client, () => true).catch(() => undefined);
      // Whichever resolved first has the directory; the other names it.
      const views = manager.views();
      const first = views.findIndex((v) => v.state === 'mounted');
      const second = views[1 - first];
      expect(first).toBeGreaterThanOrEqual(0);
      expect(second.state).toBe('error');
      expect(second.error).toContain(
        `in the guest, where mount ${views[first].mountPoint} is already: give each mount`,
      );
      writeFileSync(join([a, b][first], 'first.txt'), 'first\n');
      expect((await tb.exec('cat ~/same/first.txt', { user: tb.user })).stdout).toBe('first\n');
    } finally {
      await manager.stop();
      client.end();
      for (const d of [a, b]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('fails the mount, quoting the output and naming ~/.bashrc, when the shell prints more than 64 KiB', async () => {
    const tb = testbed();
    const greeting = join(tb.stateDir, 'shell-greeting');
    writeFileSync(greeting, `${'la'.repeat(40_000)}\n`);
    chmodSync(greeting, 0o644);
    const m = await startMount(tb, { driver: 'builtin' }, { user: CHATTY_USER, allowError: true });
    try {
      const view = m.manager.views()[0];
      expect(view.state).toBe('error');
      expect(view.error).toMatch(/^the guest's shell printed output on startup \(more than 64 KiB/);
      expect(view.error).toContain('"hello from ~/.bashrc\\na greeting without a newlinelalala');
      expect(view.error).toContain('make ~/.bashrc in the guest print nothing unless the shell is interactive');
    } finally {
      await m.stop();
      rmSync(greeting, { force: true });
    }
  });

  it.each(['builtin', 'openssh'] as const)(
    'mounts (%s driver) a host location that is itself a symlink (a linked project directory), and follows its repoint',
    async (driver) => {
      const tb = testbed();
      const m = await startMount(tb, { driver }, { linkedLocation: true });
      const other = mkdtempSync(join(tmpdir(), `tether-export-${driver}-other-`));
      try {
        expect(m.manager.views()[0]).toMatchObject({ state: 'mounted', error: null });
        writeFileSync(join(m.location, 'hello.txt'), 'through the linked location\n');
        expect(await guest(tb, `cat ${m.mountPoint}/hello.txt`)).toBe('through the linked location\n');
        await guest(tb, `echo from the guest > ${m.mountPoint}/back.txt`);
        expect(existsSync(join(m.location, 'back.txt'))).toBe(true);

        // `ln -sfn other location`: a new link renamed over the old one.
        writeFileSync(join(other, 'other.txt'), 'in the new target\n');
        symlinkSync(other, `${m.location}.new`);
        renameSync(`${m.location}.new`, m.location);
        expect(await guest(tb, `cat ${m.mountPoint}/other.txt`)).toBe('in the new target\n');
        await guest(tb, `echo after the repoint > ${m.mountPoint}/back2.txt`);
        expect(readFileSync(join(other, 'back2.txt'), 'utf8')).toBe('after the repoint\n');
        // What the guest had looked up in the old target goes once sshfs's caches expire (dcache_timeout=2).
        await waitFor(async () => (await guestTry(tb, `test -e ${m.mountPoint}/hello.txt`)).code !== 0, {
          what: 'the old target gone from the guest',
        });
      } finally {
        await m.stop();
        rmSync(other, { recursive: true, force: true });
      }
    },
  );

  it('mounts at a mount point reached through a symlink and applies file events sent for either path', async () => {
    const tb = testbed();
    const { uid, gid } = loginIds(tb.user);
    const real = join(tb.stateDir, 'var-home');
    mkdirSync(real);
    chownSync(real, uid, gid);
    const link = join(tb.stateDir, 'linked-home');
    symlinkSync(real, link);
    const mountPoint = join(link, 'me');
    const m = await startMount(tb, { driver: 'builtin', inotify: true }, { mountPoint });
    try {
      const view = m.manager.views()[0];
      expect([view.mountPoint, view.state]).toEqual([mountPoint, 'mounted']);
      writeFileSync(join(m.location, 'hello.txt'), 'through the link\n');
      expect(await guest(tb, `cat ${mountPoint}/hello.txt`)).toBe('through the link\n');

      // The host sends file events for the mount point as resolved in the guest.
      await waitFor(() => m.batches.some((b) => b.events.some((e) => e.path === 'hello.txt')), { what: 'event' });
      expect(new Set(m.batches.map((b) => b.root))).toEqual(new Set([join(real, 'me')]));

      // The guest applier finds the mount for a root given through the symlink too (as hosts before this sent it):
      // its touch goes through sshfs and SFTP to the host file.
      const old = new Date('2001-01-01T00:00:00Z');
      for (const root of [mountPoint, join(real, 'me')]) {
        utimesSync(join(m.location, 'hello.txt'), old, old);
        const applier = new FsApplier(guestSilentLogger);
        applier.submit({ root, events: [{ path: 'hello.txt', kind: 'change' }] });
        await applier.idle();
        applier.close();
        expect([root, applier.applied]).toEqual([root, 1]);
        expect(statSync(join(m.location, 'hello.txt')).mtimeMs).toBeGreaterThan(old.getTime());
      }
    } finally {
      await m.stop();
    }
    expect(await guest(tb, `grep -c ' ${real}/me ' /proc/self/mountinfo || true`)).toBe('0\n');
  });

  it("expands ~ in mountPoint to the guest user's home, without creating a directory named ~", async () => {
    const tb = testbed();
    const home = testbedHome(tb, tb.user);
    const name = `.tether-test-mnt-${process.pid}-${Date.now()}`;
    const literal = join(home, '~');
    const literalBefore = existsSync(literal);
    const m = await startMount(tb, { driver: 'builtin' }, { mountPoint: `~/${name}` });
    try {
      expect(m.manager.views().map((v) => [v.mountPoint, v.guestPath, v.state])).toEqual([
        [`~/${name}`, join(home, name), 'mounted'],
      ]);
      writeFileSync(join(m.location, 'hello.txt'), 'at home\n');
      expect(await guest(tb, `cat ${home}/${name}/hello.txt`)).toBe('at home\n');
      const reqs = await m.manager.checkRequirements(m.client, { fix: false });
      expect(reqs.map((r) => [r.name, r.ok])).toContainEqual([`mount point ~/${name}`, true]);
      if (!literalBefore) expect(existsSync(literal)).toBe(false);
    } finally {
      await m.stop();
      // Not recursive: should the unmount have failed, this must not reach through the mount. Absent when tether
      // created the directory somewhere else (the failure reported above).
      if (existsSync(join(home, name))) rmdirSync(join(home, name));
    }
  });

  it('shows where a mount point under ~ resolves for a mount its requirements kept from ever mounting', async () => {
    const tb = testbed();
    const home = testbedHome(tb, tb.user);
    const name = `.tether-test-held-${process.pid}-${Date.now()}`;
    const missing = join(tmpdir(), `tether-missing-export-${process.pid}-${Date.now()}`);
    const config = MountConfig.parse({ driver: 'builtin', inotify: false, location: missing, mountPoint: `~/${name}` });
    const manager = new MountManager([config], { logger: silentLogger() });
    const client = await connect(tb);
    try {
      // As the agent holds it (agent/mounts.ts): the host directory is missing, so it is never started.
      const unmet = (await manager.checkRequirements(client, { fix: false })).filter((r) => !r.ok);
      expect(unmet.map((r) => r.name)).toEqual([`host directory ${missing}`]);
      manager.hold(0, `${unmet[0].name}: ${unmet[0].detail}`, unmet[0].cause ?? null);
      expect(manager.waiting()).toEqual([0]);
      expect(manager.views().map((v) => [v.location, v.mountPoint, v.guestPath, v.state])).toEqual([
        [missing, `~/${name}`, join(home, name), 'error'],
      ]);
      // `mount ls`
      expect(mountTable(manager.views())).toContain(`~/${name} (${join(home, name)})`);
    } finally {
      await manager.stop();
      client.end();
      if (existsSync(join(home, name))) rmdirSync(join(home, name));
    }
  });
});

describe.skipIf(!canRunTestbed())('mount requirements on a guest that runs no commands', () => {
  // A user sshd allows SFTP only, as hosting providers and hardened images do: every command fails alike.
  const testbed = useTestbed({ sshdConfig: [`Match User ${CHATTY_USER}`, '  ForceCommand internal-sftp'] });

  it('says that no command could run, instead of blaming /etc/fuse.conf', async () => {
    const client = await connect(testbed(), CHATTY_USER);
    try {
      const reqs = await checkMountRequirements(client, [{ location: '~', mountPoint: '/tmp/x' }] as never, {
        fix: false,
      });
      const fuse = reqs.find((r) => r.name === 'user_allow_other in /etc/fuse.conf');
      expect(fuse).toMatchObject({ ok: false, detail: expect.stringMatching(/^cannot run a command in the guest/) });
      expect(fuse?.detail).not.toMatch(/needs user_allow_other/);
    } finally {
      client.end();
    }
  });
});

describe.skipIf(!canRunTestbed())('a guest whose login ends before any command runs', () => {
  // What an `exit` for non-interactive shells in ~/.bashrc does too: every command ends at once, with status 0 and
  // no output. Each check must say that instead of an empty "exit 0", and none may pass.
  const testbed = useTestbed({ sshdConfig: [`Match User ${CHATTY_USER}`, '  ForceCommand /bin/true'] });
  const RAN_NONE = /the guest ran none of tether's command.*ForceCommand/;

  it('names the cause when looking at the guest agent socket', async () => {
    const client = await connect(testbed(), CHATTY_USER);
    try {
      const shell = { execText: (cmd: string, timeoutMs?: number) => execOn(client, cmd, timeoutMs) };
      await expect(guestSocketState(shell, '/run/tether/agent.sock')).rejects.toThrow(RAN_NONE);
    } finally {
      client.end();
    }
  });

  it("gives doctor's missing guest agent the login as its cause", async () => {
    const client = await connect(testbed(), CHATTY_USER);
    try {
      expect(await loginProblem(client)).toMatch(RAN_NONE);
    } finally {
      client.end();
    }
    // The testbed's own user runs commands: nothing to say.
    const usual = await connect(testbed());
    try {
      expect(await loginProblem(usual)).toBeNull();
    } finally {
      usual.end();
    }
  });

  it('passes no mount requirement, and says why for each', async () => {
    const client = await connect(testbed(), CHATTY_USER);
    try {
      const reqs = await checkMountRequirements(client, [{ location: '~', mountPoint: '/tmp/x' }] as never, {
        fix: false,
      });
      for (const name of ['sshfs in the guest', 'user_allow_other in /etc/fuse.conf', 'mount point /tmp/x'])
        expect(reqs.find((r) => r.name === name)).toMatchObject({
          ok: false,
          cause: 'guest-unchecked',
          detail: expect.stringMatching(RAN_NONE),
        });
    } finally {
      client.end();
    }
  });
});
