// Provisioning against the testbed (real sshd, no systemd in the namespace guest): the first run uploads the bundle
// and starts the agent in the background, the second finds it current, and a killed agent is started again without
// a new upload.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRunTestbed, useTestbed } from '../../../test/helpers/testbed.js';
import { waitFor } from '../../../test/helpers/wait.js';
import { Config, DEFAULT_GUEST_SOCKET } from '../config/schema.js';
import { isAlive } from '../instance.js';
import { silentLogger } from '../log.js';
import { SshSession } from '../ssh/index.js';
import { agentSocket, chooseArtefact, seaLibcProblem } from './choose.js';
import { ensureGuestAgent, runningAgentSocket, waitExit } from './ensure.js';
import { type GuestArch, readManifest } from './manifest.js';
import { taggedValue, unitArgs } from './probe.js';

const BUNDLE_DIR = resolve(import.meta.dirname, '../../../build/guest');
const haveBuild = existsSync(join(BUNDLE_DIR, 'manifest.json'));

describe.skipIf(!canRunTestbed() || !haveBuild)('ensureGuestAgent on the testbed', () => {
  const testbed = useTestbed();
  let session: SshSession;
  let instanceDir: string;
  let config: Config;
  let installDir: string;

  beforeAll(async () => {
    const tb = testbed();
    instanceDir = mkdtempSync(join(tmpdir(), 'tether-provision-'));
    installDir = join(tb.guestDir, 'install');
    config = Config.parse({
      ssh: { host: '127.0.0.1', port: tb.sshPort, user: tb.user, identityFile: tb.identityFile, useAgent: false },
      guestAgent: { socket: join(tb.guestDir, 'agent.sock'), installDir },
    });
    session = new SshSession({ ssh: config.ssh, instanceDir, logger: silentLogger() });
    session.start();
    await session.waitConnected(20_000);
  });

  afterAll(async () => {
    const pid = agentPid();
    if (pid) process.kill(pid, 'SIGTERM');
    await session?.close('test over');
    rmSync(instanceDir, { recursive: true, force: true });
  });

  async function answers(): Promise<boolean> {
    try {
      (await session.openStreamLocal(config.guestAgent.socket)).destroy();
      return true;
    } catch {
      return false;
    }
  }

  function agentPid(): number | null {
    try {
      return Number(readFileSync(join(installDir, 'agent.pid'), 'utf8').trim()) || null;
    } catch {
      return null;
    }
  }

  it('uploads the bundle and starts the agent in the background, telling each step', async () => {
    const steps: string[] = [];
    const r = await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger(), { onStep: (s) => steps.push(s) });
    expect(r.actions).toEqual(['uploaded', 'started in background']);
    expect(steps[0]).toMatch(/^uploading tether-guest\.cjs: 0 of \d+ MB$/);
    expect(steps.at(-1)).toBe(`waiting for tether-guest to answer on ${r.socket}`);
    expect(r.artefact).toBe('bundle');
    expect(r.hash).toBe(readManifest(BUNDLE_DIR).hash);
    expect(r.summary).toMatch(/no systemd/);
    const version = await session.execText(`node ${installDir}/tether-guest.cjs version`);
    expect(version.stdout.trim()).toBe(`${r.version} ${r.hash}`);
  });

  it('finds a running current agent and does nothing', async () => {
    const r = await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger());
    expect(r.actions).toEqual(['already current']);
  });

  it('starts a stopped agent again without uploading', async () => {
    const pid = agentPid();
    expect(pid).not.toBeNull();
    process.kill(pid!, 'SIGTERM');
    await waitFor(async () => !(await answers()), { what: 'the killed agent to stop answering' });
    const r = await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger());
    expect(r.actions).toEqual(['started in background']);
    expect(agentPid()).not.toBe(pid);
  });

  it('moves a log past 1 MiB aside when it starts the agent again, so the log stays bounded', async () => {
    const log = join(installDir, 'agent.log');
    const old = 'x'.repeat(1024 * 1024 + 1);
    const pid = agentPid();
    process.kill(pid!, 'SIGTERM');
    await waitFor(async () => !(await answers()), { what: 'the killed agent to stop answering' });
    // Written once the agent is gone: its last lines (shutting down) would land after it.
    await waitFor(() => !isAlive(pid!), { what: 'the killed agent to exit' });
    writeFileSync(log, old);
    const r = await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger());
    expect(r.actions).toEqual(['started in background']);
    expect(readFileSync(`${log}.1`, 'utf8')).toBe(old);
    expect(statSync(log).size).toBeLessThan(64 * 1024);
  });

  it('names a missing build', async () => {
    await expect(ensureGuestAgent(session, config, '/nonexistent', silentLogger())).rejects.toThrow(
      /guest agent build missing or unreadable at \/nonexistent\/manifest\.json/,
    );
  });
});

describe('waitExit', () => {
  const wait = (pid: string) => spawnSync('sh', ['-c', `${waitExit(pid)} && echo exited || echo running`]).stdout;

  it('takes a zombie for exited: a guest whose init does not reap at once keeps one for seconds', () => {
    // The child exits at once; its parent, now `sleep 8`, never reaps it, so it stays a zombie past the 5 s wait.
    const dir = mkdtempSync(join(tmpdir(), 'tether-zombie-'));
    const script = [
      `sh -c 'sleep 0 & echo $! >${dir}/pid; exec sleep 8' & p=$!`,
      `while [ ! -s ${dir}/pid ]; do sleep 0.05; done; c=$(cat ${dir}/pid)`,
      `${waitExit('$c')} && echo exited || echo running; kill $p`,
    ].join('\n');
    try {
      expect(spawnSync('sh', ['-c', script]).stdout.toString()).toBe('exited\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('waits for a live process, and says it did not exit when it outlives the wait', () => {
    const live = spawnSync('sh', ['-c', `sleep 7 & p=$!; ${waitExit('$p')} && echo exited || echo running; kill $p`]);
    expect(live.stdout.toString()).toBe('running\n');
    expect(wait('999999999').toString()).toBe('exited\n');
  });
});

describe('taggedValue', () => {
  it('reads the tagged line whatever a login shell printed before it', () => {
    const out = 'Welcome to the dev box!\nactive=inactive\n\nboot=starting\nactive=activating\n';
    expect(taggedValue(out, 'boot')).toBe('starting');
    expect(taggedValue(out, 'active')).toBe('activating');
    expect(taggedValue('Welcome\n', 'boot')).toBe('');
  });
});

describe('seaLibcProblem', () => {
  it("accepts the glibc of Node's official builds and newer, and says what is missing otherwise", () => {
    expect(seaLibcProblem('glibc 2.28')).toBeNull();
    expect(seaLibcProblem('glibc 2.36')).toBeNull();
    expect(seaLibcProblem('glibc 3.0')).toBeNull();
    expect(seaLibcProblem('glibc 2.17')).toBe('it needs glibc 2.28 or newer, and the guest has glibc 2.17');
    expect(seaLibcProblem('')).toMatch(/needs glibc, and the guest has none \(musl/);
  });
});

describe('agentSocket', () => {
  const user = {
    root: false,
    sudo: false,
    socketDirWritable: false,
    dir: '/home/me/.tether-guest/',
    dirError: null,
    unitEnabled: false,
    unitActive: false,
    unitSocket: '',
    unitSocketOwner: '',
    user: 'me',
  };
  const unitFor = (owner: string) => ({ unitSocket: DEFAULT_GUEST_SOCKET, unitSocketOwner: owner });

  it('moves the default socket into the install directory for a user without root or sudo', () => {
    expect(agentSocket(DEFAULT_GUEST_SOCKET, user)).toBe('/home/me/.tether-guest/agent.sock');
  });

  it('keeps the default where root is to be had or its directory is writable, and a socket tether.yaml names', () => {
    for (const privilege of [
      { root: true },
      { sudo: true },
      { socketDirWritable: true },
      { unitEnabled: true, ...unitFor('me') }, // a unit installed for this user serves it (once the guest has booted)
      { unitActive: true, ...unitFor('me') },
    ])
      expect(agentSocket(DEFAULT_GUEST_SOCKET, { ...user, ...privilege })).toBe(DEFAULT_GUEST_SOCKET);
    expect(agentSocket('/srv/agent.sock', user)).toBe('/srv/agent.sock');
    // No install directory to put it in: the default stays, and provisioning says what to fix.
    expect(agentSocket(DEFAULT_GUEST_SOCKET, { ...user, dirError: 'Permission denied' })).toBe(DEFAULT_GUEST_SOCKET);
  });

  it("takes the user's own socket beside a unit installed for another user (root's socket is 0600)", () => {
    const own = '/home/me/.tether-guest/agent.sock';
    expect(
      agentSocket(DEFAULT_GUEST_SOCKET, { ...user, unitEnabled: true, unitActive: true, ...unitFor('root') }),
    ).toBe(own);
    expect(
      agentSocket(DEFAULT_GUEST_SOCKET, {
        ...user,
        unitEnabled: true,
        unitSocket: '/srv/a.sock',
        unitSocketOwner: 'me',
      }),
    ).toBe(own);
  });
});

describe('unitArgs', () => {
  it('reads ExecStart as tether-guest install writes it', () => {
    const exec = '/usr/local/lib/tether-guest/tether-guest run --socket-owner me --socket "/run/my dir/a\\"b.sock"';
    expect(unitArgs(exec)).toEqual([
      '/usr/local/lib/tether-guest/tether-guest',
      'run',
      '--socket-owner',
      'me',
      '--socket',
      '/run/my dir/a"b.sock',
    ]);
  });
});

describe('chooseArtefact', () => {
  const base = {
    arch: 'linux-x64' as GuestArch | null,
    hasNode: true,
    nodePath: '/usr/bin/node',
    home: '/home/me',
    libc: 'glibc 2.36',
    systemd: true,
    root: false,
    sudo: true,
    socketDirWritable: true,
  };

  it("runs the bundle on the guest's system Node", () => {
    expect(chooseArtefact(base)).toBe('bundle');
  });

  it('passes over a Node under the home directory for a systemd service, when the single executable can run', () => {
    for (const nodePath of ['/home/me/.nvm/versions/node/v22.1.0/bin/node', '/home/me/.asdf/shims/node']) {
      expect(chooseArtefact({ ...base, nodePath })).toBe('linux-x64');
      // Started in the background as the login user, its own Node is fine; through sudo it is not.
      expect(chooseArtefact({ ...base, nodePath, sudo: false })).toBe('bundle');
      expect(chooseArtefact({ ...base, nodePath, systemd: false })).toBe('bundle');
      expect(chooseArtefact({ ...base, nodePath, systemd: false, socketDirWritable: false })).toBe('linux-x64');
      // musl: the single executable cannot run, so the user's Node it is.
      expect(chooseArtefact({ ...base, nodePath, libc: '' })).toBe('bundle');
    }
    expect(chooseArtefact({ ...base, nodePath: '/home/meg/node' })).toBe('bundle');
  });

  it('uses the single executable without Node, and the bundle on an architecture without one', () => {
    expect(chooseArtefact({ ...base, hasNode: false, nodePath: '' })).toBe('linux-x64');
    expect(chooseArtefact({ ...base, arch: null })).toBe('bundle');
  });
});

describe('runningAgentSocket', () => {
  const own = '/home/me/.tether-guest/agent.sock';
  /** A guest where no socket answers (sshd refuses the channel) and `present` are the socket files there. */
  const guest = (present: string[]) => ({
    openStreamLocal: async () => {
      throw new Error('(SSH) Channel open failure: open failed');
    },
    execText: async (command: string) => {
      if (command.includes('"$D/agent.sock"')) return { code: 0, signal: null, stdout: `\n${own}\n`, stderr: '' };
      const which = present.includes(DEFAULT_GUEST_SOCKET) ? 'configured' : present.includes(own) ? 'own' : '';
      return { code: 0, signal: null, stdout: `motd\n${which ? `sock=${which}\n` : ''}`, stderr: '' };
    },
  });

  it("looks at the login user's own socket when only that exists, though nothing answers", async () => {
    expect(await runningAgentSocket(guest([own]) as never, DEFAULT_GUEST_SOCKET, '.tether-guest')).toBe(own);
  });

  it('keeps the configured socket when it exists too, or when neither does', async () => {
    const both = [DEFAULT_GUEST_SOCKET, own];
    expect(await runningAgentSocket(guest(both) as never, DEFAULT_GUEST_SOCKET, '.tether-guest')).toBe(
      DEFAULT_GUEST_SOCKET,
    );
    expect(await runningAgentSocket(guest([]) as never, DEFAULT_GUEST_SOCKET, '.tether-guest')).toBe(
      DEFAULT_GUEST_SOCKET,
    );
  });
});
