// Instance directories: where one VM's config, control socket, pid file, logs and pinned host key live
// ($TETHER_HOME/NAME, default ~/.tether/NAME). Owns naming rules, paths, the pid file and listing instances; it
// never talks to a running agent (that is control/client.ts).

import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  linkSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CURRENT_LOG, STDIO_LOG } from './log-names.js';
import { makeDirs } from './make-dirs.js';
import { deniedAt, runAsOwner } from './owner.js';

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface InstancePaths {
  name: string;
  dir: string;
  config: string;
  socket: string;
  pidFile: string;
  logs: string;
  currentLog: string;
  /** Output of the detached agent process itself (crashes before the logger exists land here). */
  stdioLog: string;
  hostKey: string;
}

export function tetherHome(): string {
  const env = process.env.TETHER_HOME;
  return resolve(env && env.length > 0 ? env : join(homedir(), '.tether'));
}

/** Throws a one-line error when `name` cannot be an instance name. */
function validateInstanceName(name: string): string {
  if (!NAME_RE.test(name))
    throw new Error(
      `invalid instance name ${JSON.stringify(name)}: expected 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit`,
    );
  return name;
}

export function instancePaths(name: string, home = tetherHome()): InstancePaths {
  return { name, ...instanceFiles(join(home, validateInstanceName(name))) };
}

/** The layout of an instance directory (the agent also runs on a bare directory: tests, the benchmarks). */
export function instanceFiles(dir: string): Omit<InstancePaths, 'name'> {
  const logs = join(dir, 'logs');
  return {
    dir,
    config: join(dir, 'tether.yaml'),
    socket: join(dir, 'ha.sock'),
    pidFile: join(dir, 'ha.pid'),
    logs,
    currentLog: join(logs, CURRENT_LOG),
    stdioLog: join(logs, STDIO_LOG),
    hostKey: join(dir, 'host_key'),
  };
}

/**
 * Which of the instance's own files `path` is (`control socket`, …), or null: a forward's host socket there would
 * fight the agent for it (a unix forward of the control socket's path keeps finding it taken).
 */
export function ownFileAt(dir: string, path: string): string | null {
  const f = instanceFiles(dir);
  const own: [string, string][] = [
    [f.socket, 'control socket'],
    [f.pidFile, 'pid file'],
    [f.config, 'config file'],
    [f.hostKey, 'pinned host key'],
    [f.logs, 'logs directory'],
  ];
  const target = resolve(path);
  return own.find(([p]) => resolve(p) === target)?.[1] ?? null;
}

/** Creates the instance directory (0700: it holds the control socket) and its logs directory. */
export function ensureInstanceDir(paths: InstancePaths): void {
  makeDirs(paths.logs, 0o700);
  chmodSync(paths.dir, 0o700);
}

/** Whether the instance has its tether.yaml; throws when another user's directory keeps this one from knowing. */
export function instanceExists(paths: InstancePaths): boolean {
  if (existsSync(paths.config)) return true;
  const denied = deniedAt(paths.config);
  if (denied) throw new Error(`instance ${paths.name}: ${runAsOwner(denied)}, or use a TETHER_HOME of your own`);
  return false;
}

/** Names of every instance under $TETHER_HOME that has a tether.yaml, sorted. */
export function listInstances(home = tetherHome()): string[] {
  let entries: string[];
  try {
    entries = readdirSync(home);
  } catch (err) {
    // Not created yet: no instances. Anything else (a file, no permission) is the caller's to report.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    const denied = deniedAt(home);
    if (denied) throw new Error(`${runAsOwner(denied)}, or use a TETHER_HOME of your own`);
    throw err;
  }
  // One this user may not read is listed too (`ls` says whose it is), rather than passed over as no instance.
  const listed = (file: string) => existsSync(file) || deniedAt(file) !== null;
  return entries
    .filter((n) => NAME_RE.test(n) && listed(join(home, n, 'tether.yaml')))
    .filter((n) => statSync(join(home, n)).isDirectory())
    .sort();
}

/**
 * Records this process as the instance's agent, atomically: two agents started at once (two `tether up`) cannot
 * both win. A pid file of a process that is gone is taken over. Returns the live owner's pid when there is one.
 */
export function claimPidFile(paths: InstancePaths): number | null {
  const tmp = `${paths.pidFile}.${process.pid}`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(tmp, paths.pidFile); // fails with EEXIST instead of replacing, unlike a rename
        return null;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = readPid(paths);
      // A pid recycled since the recorded agent died (a host reboot) is no owner.
      if (owner && owner !== process.pid && isAlive(owner) && isOurAgent(owner, paths) !== false) return owner;
      rmSync(paths.pidFile, { force: true });
    }
    return readPid(paths);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Records `pid`, an agent `up` has just spawned, as the instance's agent before that process has loaded far enough to
 * claim the pid file itself (claimPidFile takes over its own pid): a `down` in between finds and stops it instead of
 * saying the instance is not running.
 */
export function recordSpawned(paths: InstancePaths, pid: number): void {
  const tmp = `${paths.pidFile}.${process.pid}`;
  writeFileSync(tmp, `${pid}\n`, { mode: 0o600 });
  renameSync(tmp, paths.pidFile);
}

/**
 * Whether `pid` runs a tether agent for this instance (guards against a recycled pid in a stale ha.pid); undefined
 * when that cannot be told (no `ps`). `-ww`: BSD and macOS `ps` cut the command line at 80 columns otherwise.
 */
export function isOurAgent(pid: number, paths: InstancePaths): boolean | undefined {
  let cmd: string;
  try {
    cmd = execFileSync('ps', ['-ww', '-o', 'command=', '-p', String(pid)], { encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    // ps exits 1 for a pid that is gone; a ps that cannot run tells nothing.
    return (err as { status?: number | null }).status === 1 ? false : undefined;
  }
  return /tether|main\.js/.test(cmd) && cmd.split(/\s+/).includes(paths.name);
}

/** The pid recorded in ha.pid, or null when there is none or it is unreadable. */
export function readPid(paths: InstancePaths): number | null {
  try {
    const pid = Number.parseInt(readFileSync(paths.pidFile, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

/**
 * An exited process its parent has not reaped yet still takes signal 0. A detached agent's parent is init, which in
 * a container may be slow to reap (or never does): `down` would wait for a process that is gone. Linux only.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

/** Removes the runtime files of a stopped agent (socket and pid file); config, logs and host key stay. */
export function removeRuntimeFiles(paths: InstancePaths): void {
  rmSync(paths.socket, { force: true });
  rmSync(paths.pidFile, { force: true });
}
