// Guest agent provisioning (`guestAgent.provision: auto`): makes sure tether-guest runs in the guest and is the build
// this host ships. Probes the guest (probe.ts), picks the copy and socket (choose.ts), uploads the bundle or the
// single executable over SFTP when the guest's copy is missing or outdated, then installs the systemd unit
// (`tether-guest install`, via `sudo -n` when not root) or — without systemd or privileges — starts it as a background
// process, with its socket in the install directory when the default one needs privileges the login user lacks.
// When the agent's socket does not answer because sshd refuses unix-socket forwarding
// (ssh/guest-socket.ts), it fails with that reason and touches nothing: no upload, no reinstall, no restart. Owns the
// shell snippets that change the guest; it uses the SSH session given to it and never opens its own.
import { statSync } from 'node:fs';
import type { ClientChannel } from 'ssh2';
import { type Config, DEFAULT_GUEST_SOCKET } from '../config/schema.js';
import type { Logger } from '../log.js';
import { type ExecResult, streamLocalRefusal } from '../ssh/index.js';
import { shellQuote as q } from '../ssh/shell-quote.js';
import { agentSocket, chooseArtefact, seaLibcProblem } from './choose.js';
import { artefactPath, BUNDLE_FILE, type GuestArch, readManifest, seaFile } from './manifest.js';
import {
  type GuestFacts,
  installDirLine,
  isActive,
  isBooting,
  lastLine,
  probe,
  SYSTEM_LIB,
  taggedValue,
  UPLOAD_SUFFIX,
} from './probe.js';
import { sendFile, type UploadShell } from './upload.js';

/** What provisioning needs from an SSH session (SshSession satisfies it). */
export interface GuestShell extends UploadShell {
  execText(command: string, timeoutMs?: number): Promise<ExecResult>;
  openStreamLocal(socketPath: string): Promise<ClientChannel>;
}

export type ProvisionAction = 'already current' | 'uploaded' | 'installed unit' | 'started in background';

export interface ProvisionResult {
  actions: ProvisionAction[];
  version: string;
  hash: string;
  /** What runs the agent in the guest: `bundle` (guest's Node) or a single executable. */
  artefact: 'bundle' | GuestArch;
  /** One line for logs and `tether up`, e.g. "uploaded tether-guest.cjs, started in background (no systemd)". */
  summary: string;
  /** Where the agent answers: guestAgent.socket, or the login user's own (agentSocket). */
  socket: string;
}

export interface ProvisionOptions {
  /** How long to wait for the agent's socket to answer after starting it. */
  startTimeoutMs?: number;
  /** How long a guest that is still booting gets to start its installed agent (default 5 min). */
  bootWaitMs?: number;
  /**
   * The agent that answers is not this host's build (or speaks another protocol): install this build and restart
   * it even when the socket answers and the installed copy is current. The process listening on the socket is
   * stopped first, whoever started it (a unit, an earlier background start, a person).
   */
  replace?: boolean;
  /** Told each slow step as it starts (upload progress included), for the waiting requirement to show. */
  onStep?: (what: string) => void;
}

export async function ensureGuestAgent(
  shell: GuestShell,
  config: Pick<Config, 'ssh' | 'guestAgent'>,
  bundleDir: string,
  log: Logger,
  opts: ProvisionOptions = {},
): Promise<ProvisionResult> {
  const manifest = readManifest(bundleDir);
  let socket = config.guestAgent.socket;
  let openError = await answerOrWhyNot(shell, socket);
  const facts = await probe(shell, config);
  log.info({ ...facts, installed: facts.installed.map((i) => `${i.path} ${i.hash}`) }, 'guest probed');
  const own = agentSocket(socket, facts);
  if (openError && own !== socket) {
    log.info(
      { socket: own, configured: socket },
      `${config.ssh.user} can neither create ${socket} nor use sudo -n (or doas -n): the guest agent's socket is ${own}`,
    );
    socket = own;
    facts.socketDirWritable = true; // the install directory, which the probe created
    openError = await answerOrWhyNot(shell, socket);
  }
  // Its agent stopped because the guest is going down: the link comes back after the reboot by itself.
  if (facts.systemState === 'stopping')
    throw new Error('the guest is shutting down; nothing to start until it is back');

  const artefact = chooseArtefact(facts);
  refuseUnrunnable(facts, artefact, socket, config.ssh.user);
  const base = { version: manifest.version, hash: manifest.hash, artefact, socket };
  const current = facts.installed.find(
    (i) => i.hash === manifest.hash && (i.kind === 'bundle') === (artefact === 'bundle'),
  );

  if (!openError && current && !opts.replace) {
    log.info({ path: current.path, hash: manifest.hash }, 'guest agent already current and running');
    return { ...base, actions: ['already current'], summary: `already current (${manifest.version} ${manifest.hash})` };
  }

  const booting = isBooting(facts.systemState);
  if (
    openError &&
    current &&
    facts.systemd &&
    facts.unitEnabled &&
    facts.unitSocket === socket &&
    (booting || facts.unitActive)
  ) {
    // systemd is on it: right after a reboot sshd can be up before the unit has started, and on a cold, emulated
    // disk the single executable can take tens of seconds to load. Stepping in would only restart it.
    log.info({ socket, booting }, 'waiting for systemd to bring up tether-guest');
    if (await startedBySystemd(shell, socket, opts.bootWaitMs ?? BOOT_WAIT_MS)) {
      log.info({ path: current.path, hash: manifest.hash }, 'guest agent started by systemd');
      return {
        ...base,
        actions: ['already current'],
        summary: `already current (${manifest.version}), started by systemd`,
      };
    }
  }

  const actions: ProvisionAction[] = [];
  /** The agent started in the background (no systemd to watch it): its pid, to notice it exiting at start. */
  let startedPid: number | null = null;
  const notes: string[] = opts.replace ? ['replaced the running agent'] : [];
  let exe = current?.path;
  if (!exe) {
    exe = await upload(
      shell,
      artefactPath(manifest, artefact),
      installDirOf(facts, config.ssh.user),
      artefact,
      log,
      opts.onStep,
    );
    actions.push('uploaded');
    notes.push(`uploaded ${artefact === 'bundle' ? BUNDLE_FILE : seaFile(artefact)} ${manifest.version}`);
  }
  // Node by absolute path: `sudo` resets PATH to its secure_path, which misses a Node from nvm or under /opt.
  const command = artefact === 'bundle' ? `${q(facts.nodePath)} ${q(exe)}` : q(exe);
  const user = config.ssh.user;
  const sudo = facts.root ? '' : facts.elevate || 'sudo -n ';
  if (opts.replace) await stopSocketHolder(shell, socket, facts.root || facts.sudo ? sudo : '');

  if (facts.systemd && (facts.root || facts.sudo)) {
    // Stopped by hand, perhaps on purpose: starting it again is tether's job (provision: auto), but not silently.
    if (facts.unitEnabled && !facts.unitActive && !opts.replace)
      log.warn(
        { unit: 'tether-guest.service' },
        'tether-guest.service is installed but not running (stopped, or failed); starting it again ' +
          '(guestAgent.provision: never leaves starting it to you)',
      );
    opts.onStep?.('installing the systemd unit');
    // A socket that does not answer is an agent to restart, even when the install itself changes nothing (its
    // socket file was removed, or it hangs): `systemctl start` leaves a running service alone.
    const restart = openError || opts.replace ? ' --restart' : '';
    const r = await shell.execText(
      `${sudo}${command} install --socket-owner ${q(user)} --socket ${q(socket)}${restart}`,
      60_000,
    );
    if (r.code !== 0)
      throw new Error(`tether-guest install failed (exit ${r.code}): ${lastLine(r.stderr || r.stdout)}`);
    log.info({ out: r.stdout.trim() }, 'guest agent systemd unit installed');
    actions.push('installed unit');
    notes.push('installed the systemd unit');
    if (!exe.startsWith(`${SYSTEM_LIB}/`)) await removeInstalledFrom(shell, exe, log);
  } else {
    const why = facts.systemd ? 'not root and sudo -n (or doas -n) is refused' : 'no systemd';
    const elevate = !facts.root && !facts.socketDirWritable && facts.sudo ? sudo : '';
    startedPid = await startInBackground(
      shell,
      installDirOf(facts, config.ssh.user),
      `${command} run --socket ${q(socket)} --socket-owner ${q(user)}`,
      elevate,
    );
    log.info({ why, socket }, 'guest agent started in background');
    actions.push('started in background');
    notes.push(`started in background (${why}; it will not survive a guest reboot)`);
  }

  // The single executable is a 100 MB Node binary: loading it takes 10-20 s from an emulated (TCG) guest's cold disk.
  const startTimeout = opts.startTimeoutMs ?? (artefact === 'bundle' ? 20_000 : START_WAIT_MS);
  opts.onStep?.(`waiting for tether-guest to answer on ${socket}`);
  const guestLog = async () => {
    const r = await shell.execText(
      facts.systemd && actions.includes('installed unit')
        ? `${sudo}journalctl -u tether-guest -n 5 --no-pager 2>&1 || ${sudo}systemctl status tether-guest 2>&1 | tail -n 5`
        : `tail -n 5 ${q(`${facts.dir}/agent.log`)} 2>&1`,
    );
    return r.stdout.trim().split('\n').join(' | ');
  };
  await waitRunning(shell, socket, startTimeout, guestLog, startedPid);
  return { ...base, actions, summary: notes.join(', ') };
}

/**
 * The login user's own agent socket as agentSocket names it, for a look at the guest that does not provision
 * (doctor while no host agent runs); null when the guest does not say.
 */
async function ownAgentSocket(shell: Pick<GuestShell, 'execText'>, installDir: string): Promise<string | null> {
  const r = await shell.execText(`${installDirLine(installDir)}; printf '\\n%s\\n' "$D/agent.sock"`);
  // Last line: the login shell's startup files may print before it.
  const path = r.code === 0 ? r.stdout.trim().split('\n').at(-1) : undefined;
  return path?.startsWith('/') ? path : null;
}

/**
 * Where an agent that tether does not start answers (guestAgent.provision: never, or `doctor` without a host agent):
 * the configured socket, or, for the default one, the login user's own where an earlier provisioning put the agent
 * (agentSocket), when only that answers, or when only that exists: an agent behind an sshd that refuses the channel
 * is to be looked at where it is.
 */
export async function runningAgentSocket(
  shell: Pick<GuestShell, 'execText' | 'openStreamLocal'>,
  configured: string,
  installDir: string,
): Promise<string> {
  if (configured !== DEFAULT_GUEST_SOCKET || (await socketError(shell, configured)) === null) return configured;
  const own = await ownAgentSocket(shell, installDir).catch(() => null);
  if (!own) return configured;
  if ((await socketError(shell, own)) === null) return own;
  const r = await shell
    .execText(`echo; test -S ${q(configured)} && echo sock=configured || { test -S ${q(own)} && echo sock=own; }; true`)
    .catch(() => null);
  return r && taggedValue(r.stdout, 'sock') === 'own' ? own : configured;
}

/**
 * Null when the agent answers on `socket`, else why not. Throws when sshd refuses the channel: a running agent behind
 * such an sshd looks like a dead one, and reinstalling or restarting it would only take it down and end in a timeout.
 */
async function answerOrWhyNot(shell: GuestShell, socket: string): Promise<Error | null> {
  const openError = await socketError(shell, socket);
  if (openError) {
    const refused = await streamLocalRefusal(shell, socket, openError);
    if (refused) throw refused;
  }
  return openError;
}

/**
 * Throws, naming what to install or change, when the guest cannot run the agent at all: no executable for its
 * architecture and no Node, a C library the single executable cannot use, or a socket the login user cannot make.
 */
function refuseUnrunnable(
  facts: GuestFacts,
  artefact: ReturnType<typeof chooseArtefact>,
  socket: string,
  user: string,
): void {
  if (!facts.hasNode && !facts.arch)
    throw new Error(
      `guest architecture ${facts.unameM || '(unknown)'} has no tether-guest executable and the guest has no Node ≥ 20` +
        ` (node -v: ${facts.nodeVersion || 'not found'}); install Node 20+ in the guest`,
    );
  if (artefact !== 'bundle') {
    const unusable = seaLibcProblem(facts.libc);
    if (unusable)
      throw new Error(
        `the guest has no Node ≥ 20 (node -v: ${facts.nodeVersion || 'not found'}) and cannot run tether-guest's ` +
          `single executable: ${unusable}; install Node 20+ in the guest (Alpine: apk add nodejs) and tether uses ` +
          'its script bundle instead',
      );
  }
  if (!facts.root && !facts.sudo && !facts.socketDirWritable) {
    // Started as the login user, the agent could not create its socket: it would exit, and each retry upload again.
    // Its own socket would go in the install directory: when that cannot be made either, that is what to fix.
    installDirOf(facts, user);
    throw new Error(
      `the guest agent's socket ${socket} is in a directory ${user} cannot create or write, and sudo -n (or doas -n) is refused ` +
        `(it asks for a password, or ${user} may not use it): allow ${user} passwordless sudo, log in as root, or ` +
        `set guestAgent.socket to a path ${user} can write, e.g. ${facts.dir}/agent.sock`,
    );
  }
}

/**
 * The install directory, for the steps that write into it (upload, background start). One the login user cannot
 * create (a read-only or root-owned home, HOME=/nonexistent) is named with the way out: another directory.
 */
function installDirOf(facts: GuestFacts, user: string): string {
  if (facts.dirError)
    throw new Error(
      `cannot create the install directory ${facts.dir} in the guest (guestAgent.installDir): ${facts.dirError}; ` +
        `set guestAgent.installDir to an absolute directory ${user} can write, e.g. /var/tmp/tether-guest-${user}`,
    );
  return facts.dir;
}

/** Bytes free for the login user on the guest file system that holds `dir`, or null when the guest does not say. */
async function freeBytes(shell: GuestShell, dir: string): Promise<number | null> {
  const r = await shell.execText(`echo; df -Pk ${q(dir)} 2>/dev/null | tail -n 1`).catch(() => null);
  const kib = Number(r?.stdout.trim().split('\n').at(-1)?.split(/\s+/)[3]);
  return Number.isFinite(kib) && kib >= 0 ? kib * 1024 : null;
}

async function upload(
  shell: GuestShell,
  local: string,
  dir: string,
  artefact: 'bundle' | GuestArch,
  log: Logger,
  onStep?: (what: string) => void,
): Promise<string> {
  const final = `${dir}/${artefact === 'bundle' ? BUNDLE_FILE : 'tether-guest'}`;
  const tmp = `${final}${UPLOAD_SUFFIX}${process.pid}`;
  try {
    const how = await sendFile(shell, local, tmp, onStep);
    if (how === 'exec') log.info({ remote: tmp }, "the guest's sshd has no SFTP server: uploaded through cat");
    // Rename over the old copy: a running executable cannot be overwritten in place (ETXTBSY).
    const r = await shell.execText(`chmod 755 ${q(tmp)} && mv -f ${q(tmp)} ${q(final)}`);
    if (r.code !== 0) throw new Error(`installing ${final} in the guest failed: ${lastLine(r.stderr)}`);
  } catch (err) {
    // A partial upload can be as large as the single executable (~100 MB): do not leave it in the guest.
    const rm = await shell.execText(`rm -f ${q(tmp)}`).catch((e: Error) => ({ code: null, stderr: e.message }));
    if (rm.code !== 0) log.warn({ tmp, detail: rm.stderr.trim() }, `could not remove the partial upload ${tmp}`);
    // SFTP says only "Failure" for a full disk: the guest's free space, once the partial upload is gone, says it.
    const room = await freeBytes(shell, dir);
    const size = statSync(local).size;
    if (room !== null && room < size) {
      (err as Error).message +=
        ` (no room: ${dir} has ${Math.round(room / 1e6)} MB free in the guest, the agent needs ` +
        `${Math.round(size / 1e6)} MB; free some, or set guestAgent.installDir on a file system with room)`;
    }
    throw err;
  }
  log.info({ local, remote: final }, 'guest agent uploaded');
  return final;
}

/**
 * The unit runs the copy `install` made under SYSTEM_LIB; the one it was made from (the upload, ~100 MB for the
 * single executable) would only take the guest's disk twice. The next probe finds the installed copy.
 */
async function removeInstalledFrom(shell: GuestShell, path: string, log: Logger): Promise<void> {
  const r = await shell.execText(`rm -f ${q(path)}`).catch((e: Error) => ({ code: null, stderr: e.message }));
  if (r.code === 0) log.info({ path }, 'removed the copy the systemd unit was installed from');
  else log.warn({ path, detail: r.stderr.trim() }, `could not remove ${path} after installing the unit`);
}

/**
 * Stops whatever listens on the unix socket `socket` in the guest (the agent being replaced; an older one may not
 * even speak this protocol, a hung one answers nothing) and waits up to 5 s for it to exit, then kills it. The process is found by the socket's inode, from
 * /proc/net/unix and the processes' descriptors (as root through `sudo`, to see every user's), never by a pid the
 * agent reports: whatever answers on the socket cannot have the host stop another process.
 */
async function stopSocketHolder(shell: GuestShell, socket: string, sudo: string): Promise<void> {
  const script = [
    `ino=$(awk -v p=${q(socket)} '$NF == p && $4 == "00010000" { print $7; exit }' /proc/net/unix)`,
    '[ -n "$ino" ] || exit 0',
    'for f in /proc/[0-9]*/fd/*; do',
    '  [ "$(readlink "$f" 2>/dev/null)" = "socket:[$ino]" ] || continue',
    '  p=$(echo "$f" | cut -d/ -f3)',
    // A stopped agent acts on SIGTERM once continued; a hung one does not at all: SIGKILL after the wait.
    `  kill "$p"; kill -CONT "$p" 2>/dev/null; ${waitExit('$p')} && exit 0; kill -9 "$p"; ${waitExit('$p')} || exit 1; exit 0`,
    'done',
    'exit 0',
  ].join('\n');
  const r = await shell.execText(`${sudo}sh -c ${q(script)}`);
  if (r.code !== 0)
    throw new Error(`cannot stop the guest agent listening on ${socket}: ${lastLine(r.stderr) || 'it did not exit'}`);
}

/**
 * Shell: waits up to 5 s for process `pid` (a shell word) to exit; its status says whether it did. A zombie has
 * exited (its sockets are closed): a guest without an init that reaps at once (a container, a bare namespace) keeps
 * one around for seconds.
 */
export function waitExit(pid: string): string {
  const running = `[ -d /proc/${pid} ] && ! grep -q '^State:[[:space:]]*Z' /proc/${pid}/status 2>/dev/null`;
  return `i=0; while ${running} && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; ! { ${running}; }`;
}

/** The background agent's log gains each start's lines and its warnings; past this size the next start moves it. */
const AGENT_LOG_MAX = 1024 * 1024;

/**
 * Starts the agent detached from the SSH session; first stops a previous background copy we started (pid file) and
 * waits up to 5 s for it to exit: the new agent refuses to start while the old one still answers on the socket, and
 * the old one removes the socket path as it exits. `elevate` (`sudo -n `) also signals: the pid is then sudo's.
 * Resolves with the new agent's pid (sudo's, when elevated), or null if the shell did not say it.
 */
async function startInBackground(
  shell: GuestShell,
  dir: string,
  command: string,
  elevate: string,
): Promise<number | null> {
  const pidFile = q(`${dir}/agent.pid`);
  const logFile = q(`${dir}/agent.log`);
  const script = [
    `p=$(cat ${pidFile} 2>/dev/null)`,
    'if [ -n "$p" ] && grep -q tether-guest /proc/$p/cmdline 2>/dev/null; then',
    `  ${elevate}kill $p; ${waitExit('$p')}`,
    'fi',
    // A socket per UDP flow (up to 1,024) besides its own: the login session's soft limit is often 1024.
    'ulimit -n "$(ulimit -H -n)" 2>/dev/null',
    // Each start appends to the log and nothing else trims it (no journal without systemd): past AGENT_LOG_MAX it
    // moves to `.1`, as the host agent's stdio log does, so a VM that lives for months keeps two files at most.
    `[ -f ${logFile} ] && [ "$(wc -c <${logFile})" -gt ${AGENT_LOG_MAX} ] && mv -f ${logFile} ${logFile}.1`,
    `nohup ${elevate}${command} >>${logFile} 2>&1 </dev/null &`,
    `p=$!; echo "$p" >${pidFile}; echo "$p"`,
  ].join('\n');
  const r = await shell.execText(script);
  if (r.code !== 0) throw new Error(`starting the guest agent in the background failed: ${lastLine(r.stderr)}`);
  const pid = Number(lastLine(r.stdout));
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/** How long a booting guest gets to start its installed agent before provisioning steps in. */
const BOOT_WAIT_MS = 5 * 60_000;
/** How long a running unit gets to answer on its socket once the guest has booted (then it is taken as hung). */
const START_WAIT_MS = 60_000;

/**
 * Waits for the socket of the installed, enabled unit while systemd is on it: the guest is booting (up to
 * `bootWaitMs`) or the unit runs (up to START_WAIT_MS). True once the socket answers; false when the unit stopped
 * or failed, or the wait ran out.
 */
async function startedBySystemd(shell: GuestShell, socket: string, bootWaitMs: number): Promise<boolean> {
  const started = Date.now();
  for (;;) {
    if (!(await socketError(shell, socket))) return true;
    // Tagged lines, as in the probe: a login shell's startup output may come first.
    const r = await shell.execText(
      'echo; echo "boot=$(systemctl is-system-running 2>/dev/null)"; echo "active=$(systemctl is-active tether-guest 2>/dev/null)"',
      15_000,
    );
    const waited = Date.now() - started;
    const systemdOnIt =
      (isBooting(taggedValue(r.stdout, 'boot')) && waited < bootWaitMs) ||
      (isActive(taggedValue(r.stdout, 'active')) && waited < START_WAIT_MS);
    if (!systemdOnIt) return false;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

/** null when the agent's socket accepts a channel, else why it did not. */
async function socketError(shell: Pick<GuestShell, 'openStreamLocal'>, socket: string): Promise<Error | null> {
  try {
    const ch = await shell.openStreamLocal(socket);
    ch.destroy();
    return null;
  } catch (err) {
    return err as Error;
  }
}

/** /proc, not kill -0: an agent started with sudo is not the login user's to signal. A zombie has exited too. */
async function running(shell: GuestShell, pid: number): Promise<boolean> {
  const r = await shell.execText(`[ -d /proc/${pid} ] && ! grep -q '^State:[[:space:]]*Z' /proc/${pid}/status`);
  return r.code === 0;
}

/** Until the started agent answers on its socket; fails at once when sshd refuses the socket or the agent exits. */
async function waitRunning(
  shell: GuestShell,
  socket: string,
  timeoutMs: number,
  diagnose: () => Promise<string>,
  /** The agent's process when it was started in the background: one that exits fails the wait at once. */
  pid: number | null = null,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let err = await socketError(shell, socket); err; err = await socketError(shell, socket)) {
    // Once the agent listens, a channel that still fails is sshd refusing it: say so now, not after the timeout.
    const refused = await streamLocalRefusal(shell, socket, err);
    if (refused) throw refused;
    if (pid !== null && !(await running(shell, pid))) {
      const detail = await diagnose().catch((e: Error) => e.message);
      throw new Error(
        `guest agent (pid ${pid}) exited right after its start, before ${socket} answered; guest log: ${detail}`,
      );
    }
    if (Date.now() > deadline) {
      const detail = await diagnose().catch((e: Error) => e.message);
      throw new Error(`guest agent started but ${socket} does not answer after ${timeoutMs} ms; guest log: ${detail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
