// Integration-test access to the testbed (scripts/testbed.sh): a network namespace that plays the VM, with a real
// OpenSSH sshd reachable from the host at 127.0.0.1:<sshPort>. Owns the testbeds it starts and the guest processes
// it spawns, and stops exactly those (by pid) at teardown or, as a last resort, when the test process exits.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll } from 'vitest';
import { freePort } from './wait.js';

const execFileAsync = promisify(execFile);

const SCRIPT = fileURLToPath(new URL('../../scripts/testbed.sh', import.meta.url));
const SCRIPT_TIMEOUT_MS = 90_000;
const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
const KILL_GRACE_MS = 3_000;

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Testbed {
  name: string;
  sshPort: number;
  user: string;
  identityFile: string;
  /** known_hosts with the testbed's host key pinned for [127.0.0.1]:sshPort. */
  knownHostsFile: string;
  stateDir: string;
  /** '/run/netns/tb-NAME' */
  netns: string;
  /** <stateDir>/guest, owned by the login user (e.g. for the guest agent socket). */
  guestDir: string;
  /** SHA256:... of the testbed sshd host key. */
  hostKeyFingerprint: string;
  /** Run a shell command inside the guest's network namespace as root (nsenter --net), resolve with output. */
  exec(cmd: string, opts?: { timeoutMs?: number; user?: string }): Promise<ExecResult>;
  /**
   * Start a long-running process inside the guest namespace (as root, or as `user`); killed by pid at teardown.
   * stdout/stderr are pipes that are always drained, so attach 'data' listeners right away to see all output.
   */
  spawn(cmd: string, args: string[], opts?: { user?: string; env?: NodeJS.ProcessEnv }): ChildProcess;
  /** Run a command over real ssh as the login user. */
  ssh(cmd: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Stop sshd and every session it runs (the bridge stays up), e.g. to test reconnects. */
  stopSshd(): Promise<void>;
  /** Start sshd again; resolves once an ssh login works. */
  startSshd(): Promise<void>;
  /** SIGSTOP the bridge socat processes (listeners and per-connection relays): the link hangs without closing. */
  pauseBridge(): void;
  resumeBridge(): void;
}

export interface TestbedOptions {
  name?: string;
  port?: number;
  /**
   * Extra sshd_config lines, appended to the testbed's own; a keyword set here (before any Match line) replaces the
   * default line with that keyword, e.g. `AllowStreamLocalForwarding no` or `Subsystem sftp /path/to/server`.
   */
  sshdConfig?: string[];
  /** The port sshd listens on inside the guest (default 22); the host still reaches it through `port`. */
  guestSshPort?: number;
}

interface TestbedInfo {
  name: string;
  sshPort: number;
  user: string;
  identityFile: string;
  knownHostsFile: string;
  stateDir: string;
  netns: string;
  guestDir: string;
  hostKeyFingerprint: string;
}

interface LoginUser {
  uid: number;
  gid: number;
}

const live = new Map<string, { tb: Testbed; children: Set<ChildProcess> }>();
let nameCounter = 0;
let exitHookInstalled = false;

function runScript(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return execFileAsync(SCRIPT, args, { timeout: SCRIPT_TIMEOUT_MS, env }).then(
    ({ stdout }) => stdout,
    (err: Error & { stderr?: string }) => {
      throw new Error(`testbed.sh ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
    },
  );
}

function parseInfo(stdout: string): TestbedInfo {
  const line = stdout.trim().split('\n').at(-1) ?? '';
  let info: TestbedInfo;
  try {
    info = JSON.parse(line) as TestbedInfo;
  } catch {
    throw new Error(`testbed.sh up printed no JSON description: ${JSON.stringify(stdout)}`);
  }
  for (const key of ['name', 'user', 'identityFile', 'stateDir', 'netns', 'guestDir', 'hostKeyFingerprint'] as const) {
    if (typeof info[key] !== 'string' || info[key] === '') throw new Error(`testbed description lacks ${key}: ${line}`);
  }
  if (!Number.isInteger(info.sshPort)) throw new Error(`testbed description lacks sshPort: ${line}`);
  return info;
}

function lookupUser(user: string): LoginUser {
  const entry = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === user);
  if (!entry) throw new Error(`no such user in /etc/passwd: ${user}`);
  return { uid: Number(entry[2]), gid: Number(entry[3]) };
}

/**
 * argv (after `nsenter`) that runs cmd in the namespace, dropping to `user` when given; plus that user's env. HOME is
 * the user's home in this testbed, as its sshd sets it (scripts/testbed.sh).
 */
function guestCommand(info: TestbedInfo, cmd: string, args: string[], user?: string) {
  if (!user) return { argv: [`--net=${info.netns}`, cmd, ...args], env: {} };
  const u = lookupUser(user);
  return {
    argv: [
      `--net=${info.netns}`,
      'setpriv',
      `--reuid=${u.uid}`,
      `--regid=${u.gid}`,
      '--init-groups',
      '--',
      cmd,
      ...args,
    ],
    env: { HOME: testbedHome(info, user), USER: user, LOGNAME: user },
  };
}

/** A login user's home in this testbed (each testbed has its own, see scripts/testbed.sh). */
export function testbedHome(info: Pick<TestbedInfo, 'stateDir'>, user: string): string {
  return path.join(info.stateDir, 'home', user);
}

function exitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

/** Collects a child's output; rejects when it cannot start or outlives timeoutMs (it is killed then). */
function collect(child: ChildProcess, timeoutMs: number, label: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${label} timed out after ${timeoutMs}ms; stdout: ${stdout} stderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${label} could not start: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: exitCode(code, signal) });
    });
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGCONT');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a run ends without afterAll (crash, bail): synchronous cleanup of what this process started.
  process.once('exit', () => {
    for (const { tb, children } of live.values()) {
      for (const child of children) child.kill('SIGKILL');
      try {
        execFileSync(SCRIPT, ['down', tb.name], { stdio: 'ignore', timeout: SCRIPT_TIMEOUT_MS });
      } catch {
        // Nothing more can be done while exiting.
      }
    }
  });
}

function makeTestbed(info: TestbedInfo): Testbed {
  const children = new Set<ChildProcess>();

  const spawnGuest = (cmd: string, args: string[], opts: { user?: string; env?: NodeJS.ProcessEnv } = {}) => {
    const { argv, env } = guestCommand(info, cmd, args, opts.user);
    const child = spawn('nsenter', argv, { env: { ...process.env, ...env, ...opts.env }, stdio: 'pipe' });
    children.add(child);
    child.once('exit', () => children.delete(child));
    // A spawn failure must not crash the run; callers that care listen for 'error' themselves.
    child.on('error', () => children.delete(child));
    // Drained so a chatty process never blocks on a full pipe.
    child.stdout.resume();
    child.stderr.resume();
    return child;
  };

  const sshArgs = (cmd: string) => [
    '-F',
    'none',
    '-p',
    String(info.sshPort),
    '-i',
    info.identityFile,
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${info.knownHostsFile}`,
    '-o',
    'ConnectTimeout=10',
    '-o',
    'LogLevel=ERROR',
    `${info.user}@127.0.0.1`,
    cmd,
  ];

  const tb: Testbed = {
    ...info,
    exec(cmd, opts = {}) {
      const { argv, env } = guestCommand(info, '/bin/sh', ['-c', cmd], opts.user);
      const child = spawn('nsenter', argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      return collect(child, opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, `guest command ${JSON.stringify(cmd)}`);
    },
    spawn: spawnGuest,
    ssh(cmd, opts = {}) {
      const child = spawn('ssh', sshArgs(cmd), { stdio: ['ignore', 'pipe', 'pipe'] });
      const label = `ssh ${info.user}@127.0.0.1:${info.sshPort} ${JSON.stringify(cmd)}`;
      return collect(child, opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, label);
    },
    async stopSshd() {
      await runScript(['stop-sshd', info.name]);
    },
    async startSshd() {
      await runScript(['start-sshd', info.name]);
    },
    pauseBridge() {
      execFileSync(SCRIPT, ['pause', info.name], { stdio: ['ignore', 'ignore', 'pipe'], timeout: SCRIPT_TIMEOUT_MS });
    },
    resumeBridge() {
      execFileSync(SCRIPT, ['resume', info.name], { stdio: ['ignore', 'ignore', 'pipe'], timeout: SCRIPT_TIMEOUT_MS });
    },
  };
  live.set(info.name, { tb, children });
  return tb;
}

function uniqueName(): string {
  nameCounter += 1;
  return `t${process.pid.toString(36)}n${nameCounter}`;
}

/** Starts a testbed; picks a free loopback port and a unique name when absent. */
export async function startTestbed(opts: TestbedOptions = {}): Promise<Testbed> {
  if (!canRunTestbed()) throw new Error('testbed cannot run here (see the warning above)');
  installExitHook();
  const name = opts.name ?? uniqueName();
  // A picked port can be taken between picking and binding: retry with another one.
  const attempts = opts.port === undefined ? 3 : 1;
  const env = {
    ...process.env,
    TETHER_TESTBED_SSHD_EXTRA: (opts.sshdConfig ?? []).join('\n'),
    TETHER_TESTBED_GUEST_SSH_PORT: String(opts.guestSshPort ?? 22),
  };
  let lastError: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      return makeTestbed(parseInfo(await runScript(['up', name, String(port)], env)));
    } catch (err) {
      lastError = err;
      await runScript(['down', name]).catch(() => undefined);
    }
  }
  throw lastError;
}

/**
 * Guest agents that tether, under test, started from this testbed's state directory (provisioning's background agent,
 * a replacement) and a test's own teardown missed: a test that failed, or a replacement started after it read the pid
 * file. A real guest keeps its agent; a testbed going away takes it along.
 */
function guestAgentsOf(tb: Testbed): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.startsWith(`${tb.stateDir}/`) && a.includes('tether-guest'))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Alive and not a zombie (a zombie's parent, the namespace's init here, may reap it late). */
function running(pid: number): boolean {
  try {
    return !/^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // exited meanwhile
  }
}

async function stopGuestAgents(tb: Testbed): Promise<void> {
  const pids = guestAgentsOf(tb);
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + 5_000;
  while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of pids.filter(running)) signal(pid, 'SIGKILL');
}

/** Kills the guest processes this testbed spawned and the guest agents started in it, then tears it down. */
export async function stopTestbed(tb: Testbed): Promise<void> {
  const entry = live.get(tb.name);
  if (entry) await Promise.all([...entry.children].map(killChild));
  live.delete(tb.name);
  await stopGuestAgents(tb);
  await runScript(['down', tb.name]);
}

/** Inside a describe(): starts one testbed in beforeAll, stops it in afterAll, returns a getter. */
export function useTestbed(opts: TestbedOptions = {}): () => Testbed {
  let tb: Testbed | undefined;
  beforeAll(async () => {
    tb = await startTestbed(opts);
  });
  afterAll(async () => {
    if (tb) await stopTestbed(tb);
    tb = undefined;
  });
  return () => {
    if (!tb) throw new Error('testbed is not running: use the getter inside tests or hooks after beforeAll');
    return tb;
  };
}

let canRun: { ok: boolean; reason: string } | undefined;

function onPath(bin: string): boolean {
  if (bin.startsWith('/')) return existsSync(bin);
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(path.join(dir, bin)));
}

function checkTestbed(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'the testbed needs Linux network namespaces' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the testbed needs root (network namespaces, sshd)' };
  const missing = ['/usr/sbin/sshd', 'ssh', 'ssh-keygen', 'socat', 'ip', 'nsenter', 'setpriv', 'useradd'].filter(
    (bin) => !onPath(bin),
  );
  if (missing.length) return { ok: false, reason: `the testbed needs these programs: ${missing.join(', ')}` };
  return { ok: true, reason: '' };
}

/**
 * true when root-only testbed tests can run. Otherwise prints why and returns false (callers use
 * describe.skipIf(!canRunTestbed())), except under CI=true, where a skip would hide a failure: then it throws.
 */
export interface TestbedConfigParts {
  ssh?: Record<string, unknown>;
  guestAgent?: Record<string, unknown>;
  mounts?: unknown[];
  portForwards?: unknown[];
}

/**
 * The tether config, as a user writes it (before defaults), that points at this testbed guest: its sshd, login user
 * and key, and a guest agent socket and install directory in its state directory; no mounts unless given, and the
 * port forwards given. `ssh` and `guestAgent` entries are merged over those.
 */
export function testbedConfigInput(tb: Testbed, parts: TestbedConfigParts = {}) {
  return {
    ssh: {
      host: '127.0.0.1',
      port: tb.sshPort,
      user: tb.user,
      identityFile: tb.identityFile,
      useAgent: false,
      ...parts.ssh,
    },
    guestAgent: {
      socket: path.join(tb.guestDir, 'agent.sock'),
      installDir: path.join(tb.guestDir, 'install'),
      ...parts.guestAgent,
    },
    mounts: parts.mounts ?? [],
    ...(parts.portForwards ? { portForwards: parts.portForwards } : {}),
  };
}

export function canRunTestbed(): boolean {
  canRun ??= checkTestbed();
  if (canRun.ok) return true;
  if (process.env.CI === 'true') throw new Error(`testbed tests cannot run under CI: ${canRun.reason}`);
  console.warn(`skipping testbed tests: ${canRun.reason}`);
  return false;
}
