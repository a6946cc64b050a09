// Provisioning on guests that get in its way, each a testbed whose sshd is configured for the case:
//   - sshd refuses unix-socket forwarding (AllowStreamLocalForwarding no): a running agent looks dead over SSH;
//     provisioning and the host agent must say so, naming the sshd options, and neither reinstall nor restart it;
//   - the guest's SFTP server sends a malformed packet in the middle of the upload: the upload fails with a clear
//     error, the host process survives it, and no partial file is left in the guest;
//   - Node only on the login user's PATH (where nvm puts it): the agent is started by node's absolute path, which
//     `sudo` (secure_path) would otherwise not find; an install directory that cannot be made: mkdir's reason is said;
//   - sshd with AllowTcpForwarding no, which OpenSSH applies to unix sockets as well: the same refusal, naming it;
//   - a musl guest (Alpine) without a usable Node: refused before the upload, saying that installing Node fixes it;
//   - a socket directory the login user cannot write, without sudo: refused before the upload, with the ways out;
// and the bundle on a Node that lacks `node:sea` (20.0-20.11, 21.0-21.6), simulated by a preload that removes it.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../host/src/agent/index.js';
import { runChecks } from '../host/src/cli/doctor.js';
import { Config, DEFAULT_GUEST_SOCKET } from '../host/src/config/schema.js';
import { ensureInstanceDir, instancePaths, isAlive } from '../host/src/instance.js';
import { silentLogger } from '../host/src/log.js';
import { ensureGuestAgent, readManifest } from '../host/src/provision/index.js';
import { guestSocketState, SshSession, StreamLocalRefusedError } from '../host/src/ssh/index.js';
import { writeTestbedConfig } from './helpers/cli-helpers.js';
import { guest, loginIds, recordingLogger, startMount } from './helpers/mount-fixture.js';
import { canRunTestbed, testbedConfigInput, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const BUNDLE_DIR = join(import.meta.dirname, '../build/guest');
const BUNDLE = join(BUNDLE_DIR, 'tether-guest.cjs');
const haveBuild = existsSync(join(BUNDLE_DIR, 'manifest.json'));
const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

/** A directory on the host that the guest's login user can read (the testbed shares the filesystem). */
function sharedDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

async function connect(config: Config, instanceDir: string): Promise<SshSession> {
  const session = new SshSession({ ssh: config.ssh, instanceDir, logger: silentLogger() });
  session.start();
  await session.waitConnected(20_000);
  return session;
}

/** The pid of the background agent provisioning started (its pid file in the install directory), or null. */
function agentPid(installDir: string): number | null {
  try {
    return Number(readFileSync(join(installDir, 'agent.pid'), 'utf8').trim()) || null;
  } catch {
    return null;
  }
}

function stopAgent(installDir: string): void {
  const pid = agentPid(installDir);
  if (pid && isAlive(pid)) process.kill(pid, 'SIGTERM');
}

/** A host agent with a long requirement deadline: a refusal must fail it at once, not by timing out. */
function hostAgent(name: string, config: Config, instanceDir: string): HostAgent {
  return new HostAgent(name, config, {
    instanceDir,
    logger: silentLogger(),
    guestBundleDir: BUNDLE_DIR,
    requirementTimeoutMs: 60_000,
    ssh: { backoffInitialMs: 100, backoffMaxMs: 1_000 },
  });
}

/**
 * A testbed guest whose sshd has `sshdConfig`, and an SSH session to it, for one describe block. Afterwards the agent
 * provisioning started is stopped and `dirs` are removed.
 */
function useGuestSession(sshdConfig: string[], prefix: string, dirs: string[] = []) {
  const testbed = useTestbed({ sshdConfig });
  const ctx = { testbed } as { testbed: typeof testbed; instanceDir: string; config: Config; session: SshSession };
  beforeAll(async () => {
    ctx.instanceDir = mkdtempSync(join(tmpdir(), prefix));
    ctx.config = Config.parse(testbedConfigInput(testbed()));
    ctx.session = await connect(ctx.config, ctx.instanceDir);
  });
  afterAll(async () => {
    if (ctx.config) stopAgent(ctx.config.guestAgent.installDir);
    await ctx.session?.close('test over');
    for (const dir of [ctx.instanceDir, ...dirs]) if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return ctx;
}

const REFUSAL = /sshd refuses unix-socket forwarding.*AllowStreamLocalForwarding yes.*DisableForwarding no/;

describe.skipIf(!canRunTestbed() || !haveBuild)('provisioning: sshd refuses unix-socket forwarding', () => {
  const testbed = useTestbed({ sshdConfig: ['AllowStreamLocalForwarding no'] });
  let instanceDir: string;
  let config: Config;
  let session: SshSession;
  let installDir: string;
  /** The agent the first run started, and the inode of the bundle it runs: what "touch nothing" keeps. */
  let first: { pid: number; bundleIno: number };

  beforeAll(async () => {
    const tb = testbed();
    instanceDir = mkdtempSync(join(tmpdir(), 'tether-provision-refused-'));
    config = Config.parse(testbedConfigInput(tb));
    installDir = config.guestAgent.installDir;
    session = await connect(config, instanceDir);
  });

  afterAll(async () => {
    stopAgent(installDir);
    await session?.close('test over');
    rmSync(instanceDir, { recursive: true, force: true });
  });

  /** Asserts that the first run's agent still runs from the same, untouched bundle. */
  function assertUntouched(): void {
    expect(agentPid(installDir)).toBe(first.pid);
    expect(isAlive(first.pid)).toBe(true);
    expect(statSync(join(installDir, 'tether-guest.cjs')).ino).toBe(first.bundleIno);
    expect(readdirSync(installDir).filter((f) => f.includes('.upload-'))).toEqual([]);
  }

  it('first run: installs and starts the agent, then names the sshd options instead of waiting for a timeout', async () => {
    // A long start timeout: were the refusal not recognised, this would end in "does not answer after 60000 ms".
    const run = ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger(), { startTimeoutMs: 60_000 });
    await expect(run).rejects.toBeInstanceOf(StreamLocalRefusedError);
    await expect(run).rejects.toThrow(REFUSAL);
    await expect(run).rejects.toThrow(config.guestAgent.socket);
    // The agent itself is fine: it listens, only the SSH channel to it is refused.
    expect((await guestSocketState(session, config.guestAgent.socket)).state).toBe('listening');
    const pid = agentPid(installDir);
    expect(pid).not.toBeNull();
    first = { pid: pid!, bundleIno: statSync(join(installDir, 'tether-guest.cjs')).ino };
  });

  it('second run: the same error, and no upload, reinstall or restart', async () => {
    await expect(ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger())).rejects.toThrow(REFUSAL);
    assertUntouched();
  });

  it('host agent: requirement 3 fails with the sshd options and leaves the running agent alone', async () => {
    const agent = hostAgent('refused', config, instanceDir);
    try {
      await expect(agent.start()).rejects.toThrow(
        /requirement 3 of 4 \(guest agent provisioned\) failed: .*sshd refuses/,
      );
      const req = agent.status().requirements[2];
      expect(req.state).toBe('failed');
      expect(req.detail).toMatch(REFUSAL);
      expect(agent.link.blocked).toMatch(REFUSAL);
    } finally {
      await agent.stop('test over');
    }
    assertUntouched();
  });

  it('doctor names the sshd options for the running agent instead of calling it dead', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tether-provision-doctor-'));
    try {
      const paths = instancePaths('refused', home);
      ensureInstanceDir(paths);
      writeTestbedConfig(paths.config, testbed());
      const results = await runChecks(paths, () => {});
      const agentCheck = results.find((r) => r.name === 'guest agent');
      expect(agentCheck).toMatchObject({ state: 'fail', detail: expect.stringMatching(REFUSAL) });
      expect(agentCheck?.fix).toMatch(/AllowStreamLocalForwarding yes/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
    assertUntouched();
  });

  it('host agent with provision: never: requirement 4 fails with the sshd options', async () => {
    const never = Config.parse(testbedConfigInput(testbed(), { guestAgent: { provision: 'never' } }));
    const agent = hostAgent('refused-never', never, instanceDir);
    try {
      await expect(agent.start()).rejects.toThrow(/requirement 4 of 4 \(guest agent running\) failed: .*sshd refuses/);
      expect(agent.status().requirements[3].detail).toMatch(REFUSAL);
    } finally {
      await agent.stop('test over');
    }
    assertUntouched();
  });
});

// Relays SFTP between sshd and OpenSSH's sftp-server and, after LIMIT responses (VERSION, HANDLE, then a few WRITE
// statuses, so the file already holds data), sends a packet of an unknown type instead of the next one.
const BREAKING_SFTP = `
const { spawn } = require('node:child_process');
const [serverPath, limit] = process.argv.slice(2);
const server = spawn(serverPath, [], { stdio: ['pipe', 'pipe', 'inherit'] });
process.stdin.pipe(server.stdin);
let buf = Buffer.alloc(0), responses = 0, broken = false;
server.stdout.on('data', (d) => {
  if (broken) return;
  buf = Buffer.concat([buf, d]);
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
    const n = 4 + buf.readUInt32BE(0);
    process.stdout.write(buf.subarray(0, n));
    buf = buf.subarray(n);
    if (++responses === Number(limit)) {
      broken = true;
      process.stdout.write(Buffer.from([0, 0, 0, 5, 200, 0, 0, 0, 1]));
      return;
    }
  }
});
server.on('exit', () => process.exit(0));
`;

describe.skipIf(!canRunTestbed() || !haveBuild || !existsSync(SFTP_SERVER))(
  'provisioning: a malformed SFTP packet during the upload',
  () => {
    const scriptDir = sharedDir('tether-bad-sftp-');
    const script = join(scriptDir, 'breaking-sftp.cjs');
    writeFileSync(script, BREAKING_SFTP, { mode: 0o644 });
    const ctx = useGuestSession(
      [`Subsystem sftp ${process.execPath} ${script} ${SFTP_SERVER} 10`],
      'tether-provision-sftp-',
      [scriptDir],
    );

    it('fails the upload with the SFTP error, survives it and removes the partial file', async () => {
      const { config, session } = ctx;
      await expect(ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger())).rejects.toThrow(
        /uploading .*tether-guest\.cjs to the guest's .*tether-guest\.cjs\.upload-\d+ failed: the guest's SFTP server: Unknown packet type 200/,
      );
      // The SSH connection (and this process) outlived the broken SFTP session.
      expect(session.connected).toBe(true);
      expect((await session.execText('echo ok')).stdout.trim()).toBe('ok');
      expect(readdirSync(config.guestAgent.installDir)).toEqual([]);
    });
  },
);

describe.skipIf(!canRunTestbed() || !haveBuild)(
  'provisioning: node on the login PATH only, unusable install dir',
  () => {
    // Where nvm would put node: first on the login user's PATH (sshd's SetEnv), absent from sudo's secure_path.
    const nvmDir = sharedDir('tether-nvm-');
    const nvmBin = join(nvmDir, 'bin');
    mkdirSync(nvmBin, { mode: 0o755 });
    symlinkSync(process.execPath, join(nvmBin, 'node'));
    const ctx = useGuestSession([`SetEnv PATH=${nvmBin}:/usr/local/bin:/usr/bin:/bin`], 'tether-provision-nvm-', [
      nvmDir,
    ]);

    it('the login shell finds node on its PATH only (the setup this test relies on)', async () => {
      expect((await ctx.session.execText('command -v node')).stdout.trim()).toBe(join(nvmBin, 'node'));
    });

    it('starts the agent with node by its absolute path', async () => {
      const r = await ensureGuestAgent(ctx.session, ctx.config, BUNDLE_DIR, silentLogger());
      expect(r.actions).toEqual(['uploaded', 'started in background']);
      expect(r.artefact).toBe('bundle');
      const pid = agentPid(ctx.config.guestAgent.installDir);
      expect(pid).not.toBeNull();
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      expect(argv.slice(0, 3)).toEqual([
        join(nvmBin, 'node'),
        join(ctx.config.guestAgent.installDir, 'tether-guest.cjs'),
        'run',
      ]);
      // The probe ran the installed bundle with the same node: a second run finds it current.
      expect((await ensureGuestAgent(ctx.session, ctx.config, BUNDLE_DIR, silentLogger())).actions).toEqual([
        'already current',
      ]);
    });

    it('an agent that exits at its start fails the start at once, with its log, not after the start timeout', async () => {
      const running = agentPid(ctx.config.guestAgent.installDir);
      stopAgent(ctx.config.guestAgent.installDir);
      // Gone, or a zombie its new parent has not reaped yet (the testbed's init reaps late): it answers nothing.
      const gone = (pid: number) => !isAlive(pid) || /^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (running) await waitFor(() => gone(running), { what: 'the running agent to exit' });
      const node = join(nvmBin, 'node');
      rmSync(node);
      // The probe's own node runs work; `tether-guest.cjs run` (the agent) ends at once.
      writeFileSync(
        node,
        `#!/bin/sh\nif [ "$2" = run ]; then echo "simulated crash at start" >&2; exit 3; fi\nexec ${process.execPath} "$@"\n`,
        { mode: 0o755 },
      );
      try {
        // Were the exit not noticed, this would end in "does not answer after 60000 ms".
        await expect(
          ensureGuestAgent(ctx.session, ctx.config, BUNDLE_DIR, silentLogger(), { startTimeoutMs: 60_000 }),
        ).rejects.toThrow(
          /guest agent \(pid \d+\) exited right after its start, before .* answered; guest log: .*simulated crash at start/,
        );
      } finally {
        rmSync(node);
        symlinkSync(process.execPath, node);
      }
    });

    it("names mkdir's reason when the install directory cannot be made", async () => {
      const tb = ctx.testbed();
      const blocker = join(tb.guestDir, 'not-a-dir');
      writeFileSync(blocker, '');
      const bad = Config.parse(
        testbedConfigInput(tb, {
          guestAgent: { installDir: join(blocker, 'install'), socket: join(tb.guestDir, 'other.sock') },
        }),
      );
      await expect(ensureGuestAgent(ctx.session, bad, BUNDLE_DIR, silentLogger())).rejects.toThrow(
        new RegExp(`cannot create the install directory ${join(blocker, 'install')} in the guest.*Not a directory`),
      );
    });
  },
);

// Makes `node:sea` unknown, as on Node 20.0-20.11 and 21.0-21.6, with the same error those versions throw.
const NO_SEA_PRELOAD = `
const Module = require('node:module');
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === 'node:sea') {
    const err = new Error('No such built-in module: node:sea');
    err.code = 'ERR_UNKNOWN_BUILTIN_MODULE';
    throw err;
  }
  return load.call(this, request, ...rest);
};
`;

describe.skipIf(!haveBuild)('the bundle on a Node without node:sea', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-no-sea-'));
  const preload = join(dir, 'no-sea.cjs');
  writeFileSync(preload, NO_SEA_PRELOAD);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[]) =>
    execFileSync(process.execPath, ['--require', preload, ...args], { encoding: 'utf8', stdio: 'pipe' });

  it('the preload removes node:sea (the setup this test relies on)', () => {
    expect(() => run(['-e', "require('node:sea')"])).toThrow(/No such built-in module: node:sea/);
  });

  it('runs: node:sea is loaded only to tell a single executable apart', () => {
    const { version, hash } = readManifest(BUNDLE_DIR);
    expect(run([BUNDLE, 'version']).trim()).toBe(`${version} ${hash}`);
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('provisioning: sshd with AllowTcpForwarding no', () => {
  // OpenSSH applies AllowTcpForwarding to unix-socket channels too (session.c sets up local forwarding permissions
  // for both), so the guest agent's socket is refused although AllowStreamLocalForwarding is yes.
  const ctx = useGuestSession(['AllowTcpForwarding no'], 'tether-provision-notcp-');

  it('fails with the refusal, naming AllowTcpForwarding too, and leaves the started agent running', async () => {
    const { config, session } = ctx;
    const run = ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger(), { startTimeoutMs: 60_000 });
    await expect(run).rejects.toThrow(REFUSAL);
    await expect(run).rejects.toThrow(/AllowTcpForwarding yes \(or local: OpenSSH applies it to unix sockets too\)/);
    expect((await guestSocketState(session, config.guestAgent.socket)).state).toBe('listening');
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('provisioning: a musl guest without a usable Node', () => {
  // What Alpine looks like to the probe: `getconf GNU_LIBC_VERSION` fails, and the only node is too old for the
  // bundle, so the single executable would be next, which cannot run without glibc.
  const fakeDir = sharedDir('tether-musl-');
  const fakeBin = join(fakeDir, 'bin');
  mkdirSync(fakeBin, { mode: 0o755 });
  writeFileSync(join(fakeBin, 'getconf'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  writeFileSync(join(fakeBin, 'node'), '#!/bin/sh\necho v18.19.0\n', { mode: 0o755 });
  const ctx = useGuestSession([`SetEnv PATH=${fakeBin}:/usr/local/bin:/usr/bin:/bin`], 'tether-provision-musl-', [
    fakeDir,
  ]);

  it('refuses before uploading, saying why and that installing Node fixes it', async () => {
    const { config, session } = ctx;
    await expect(ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger())).rejects.toThrow(
      /no Node ≥ 20 \(node -v: v18\.19\.0\) and cannot run tether-guest's single executable: it needs glibc, and the guest has none \(musl, as on Alpine\?\); install Node 20\+ in the guest \(Alpine: apk add nodejs\)/,
    );
    const installDir = config.guestAgent.installDir;
    expect(existsSync(installDir) ? readdirSync(installDir) : []).toEqual([]);
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('provisioning: a socket directory the login user cannot write', () => {
  const ctx = useGuestSession([], 'tether-provision-sockdir-');

  it('refuses before uploading, with the ways out, instead of starting an agent that cannot listen', async () => {
    const { config, session } = ctx;
    expect((await session.execText('sudo -n true 2>/dev/null && echo sudo')).stdout.trim()).toBe(''); // the setup
    const socket = `/run/tether-test-${process.pid}/agent.sock`;
    const bad = Config.parse(testbedConfigInput(ctx.testbed(), { guestAgent: { socket } }));
    await expect(ensureGuestAgent(session, bad, BUNDLE_DIR, silentLogger())).rejects.toThrow(
      new RegExp(
        `socket ${socket} is in a directory ${config.ssh.user} cannot create or write, and sudo -n \\(or doas -n\\) is refused .*` +
          `set guestAgent.socket to a path ${config.ssh.user} can write, e.g. ${config.guestAgent.installDir}/agent.sock`,
      ),
    );
    const installDir = config.guestAgent.installDir;
    expect(existsSync(installDir) ? readdirSync(installDir) : []).toEqual([]);
  });

  it('names the install directory, not the socket, when neither can be made (a home the user cannot write)', async () => {
    const { config, session } = ctx;
    const tb = ctx.testbed();
    const blocker = join(tb.guestDir, 'not-a-home');
    writeFileSync(blocker, '');
    const installDir = join(blocker, '.tether-guest');
    // The default socket, whose directory the user cannot make either: its own would go in the install directory.
    const bad = Config.parse(testbedConfigInput(tb, { guestAgent: { installDir, socket: DEFAULT_GUEST_SOCKET } }));
    await expect(ensureGuestAgent(session, bad, BUNDLE_DIR, silentLogger())).rejects.toThrow(
      new RegExp(
        `cannot create the install directory ${installDir} in the guest \\(guestAgent.installDir\\): .*Not a directory; ` +
          `set guestAgent.installDir to an absolute directory ${config.ssh.user} can write`,
      ),
    );
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('a guest sshd without an SFTP server', () => {
  const ctx = useGuestSession(['Subsystem sftp /nonexistent/sftp-server'], 'tether-provision-nosftp-');

  it('uploads through cat on an exec channel, byte for byte, and the agent runs', async () => {
    const { session, config } = ctx;
    // Partial uploads of agents stopped before they finished go; one still being written (open) stays.
    const dir = config.guestAgent.installDir;
    mkdirSync(dir, { recursive: true });
    const { uid, gid } = loginIds(ctx.testbed().user);
    chownSync(dir, uid, gid);
    const [stale, fresh] = ['tether-guest.upload-111', 'tether-guest.cjs.upload-222'].map((f) => join(dir, f));
    for (const f of [stale, fresh]) {
      writeFileSync(f, 'partial');
      chownSync(f, uid, gid);
    }
    const writer = spawn(
      'setpriv',
      [
        `--reuid=${uid}`,
        `--regid=${gid}`,
        '--clear-groups',
        'sh',
        '-c',
        'exec 3>>"$0"; echo open; exec sleep 60',
        fresh,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise((resolve) => writer.stdout.once('data', resolve));
      await expect(session.sftp()).rejects.toThrow(/exit code \d+ while establishing SFTP session/); // the setup
      const steps: string[] = [];
      const r = await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger(), { onStep: (s) => steps.push(s) });
      expect(r.actions).toEqual(expect.arrayContaining(['uploaded', 'started in background']));
      expect(steps.filter((s) => s.startsWith('uploading '))).toHaveLength(4);
      const uploaded = join(config.guestAgent.installDir, 'tether-guest.cjs');
      const local = join(BUNDLE_DIR, 'tether-guest.cjs');
      expect(createHash('sha256').update(readFileSync(uploaded)).digest('hex')).toBe(
        createHash('sha256').update(readFileSync(local)).digest('hex'),
      );
      expect(readdirSync(dir).filter((f) => f.includes('.upload-'))).toEqual(['tether-guest.cjs.upload-222']);
    } finally {
      writer.kill();
    }
    rmSync(fresh);
    expect((await ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger())).actions).toEqual(['already current']);
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('a guest sshd that allows one session per connection', () => {
  const ctx = useGuestSession(['MaxSessions 1'], 'tether-provision-maxsessions-');

  it('runs guest commands side by side and back to back, and provisions', async () => {
    const { session, config } = ctx;
    const side = await Promise.all([1, 2, 3].map((i) => session.execText(`echo ${i}`)));
    expect(side.map((r) => r.stdout.trim())).toEqual(['1', '2', '3']);
    for (let i = 0; i < 5; i++) expect((await session.execText(`echo ${i}`)).code).toBe(0);
    const [provisioned, probe] = await Promise.all([
      ensureGuestAgent(session, config, BUNDLE_DIR, silentLogger()),
      session.execText('echo "$SSH_CONNECTION"'),
    ]);
    expect(provisioned.actions).toContain('uploaded');
    expect(probe.stdout).toMatch(/^\S+ \d+ \S+ \d+$/m);
  });

  it('mounts with the one session: the mount is seen from its own start command, and unmounted through it', async () => {
    const { logger, lines } = recordingLogger();
    const m = await startMount(ctx.testbed(), { driver: 'builtin', writable: true }, { logger });
    try {
      expect(m.manager.views()[0]).toMatchObject({ state: 'mounted', error: null });
      await guest(ctx.testbed(), `echo through > ${m.mountPoint}/one.txt`);
      expect(readFileSync(join(m.location, 'one.txt'), 'utf8')).toBe('through\n');
    } finally {
      await m.stop();
    }
    // No session was left for the unmount command: sshfs ended with its channel and took the mount with it.
    expect(lines.some((l) => l.msg.includes('ending sshfs through its own channel'))).toBe(true);
    expect(lines.filter((l) => l.msg.includes('could not unmount'))).toEqual([]);
    await expect
      .poll(() => readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${m.mountPoint} `), { timeout: 10_000 })
      .toBe(false);
  });

  it('names the limit when a session stays taken', async () => {
    const { session } = ctx;
    // sshd frees the session once its command has exited, not when the channel closes.
    const held = await session.exec('sleep 3');
    try {
      await expect(session.execText('true')).rejects.toThrow(
        /open failed \(the guest's sshd allows no more sessions.*MaxSessions/,
      );
    } finally {
      held.close();
    }
    await expect
      .poll(async () => (await session.execText('echo again').catch(() => null))?.stdout.trim())
      .toBe('again');
  });
});

describe.skipIf(!canRunTestbed() || !haveBuild)('provisioning: an install directory without room', () => {
  // A 512 KiB tmpfs: the bundle (over a MB) does not fit. Mounted on the host, which the testbed guest shares.
  const full = sharedDir('tether-provision-full-');
  const ctx = useGuestSession([], 'tether-provision-full-session-');
  beforeAll(() => {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=1777', 'tether-test-full', full]);
  });
  afterAll(() => {
    execFileSync('umount', [full]);
    rmSync(full, { recursive: true, force: true });
  });

  it('says the guest has no room for the agent, with how much it has and needs, and leaves nothing', async () => {
    const cramped = Config.parse(testbedConfigInput(ctx.testbed(), { guestAgent: { installDir: full } }));
    await expect(ensureGuestAgent(ctx.session, cramped, BUNDLE_DIR, silentLogger())).rejects.toThrow(
      new RegExp(
        `uploading .* failed: .*\\(no room: ${full} has 1 MB free in the guest, the agent needs \\d+ MB; free some, ` +
          'or set guestAgent.installDir on a file system with room\\)',
      ),
    );
    expect(readdirSync(full)).toEqual([]);
  });
});
