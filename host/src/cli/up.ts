// What `tether up NAME` does (commands/up.ts registers it): writes or updates tether.yaml from the flags, starts the
// host agent detached in the background (or in this process with --foreground), and follows the boot requirements
// until the VM is ready or one fails.
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { portOfAddr } from '../address.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import { expandHome } from '../config/paths.js';
import { copyConfigFile, updateConfigFile, writeInitialConfig } from '../config/write.js';
import { AgentNotAnsweringError, AgentNotRunningError } from '../control/client.js';
import { unprivilegedSpec } from '../forward/privileged.js';
import { ensureInstanceDir, type InstancePaths, instanceExists, isAlive, readPid, recordSpawned } from '../instance.js';
import {
  type ForwardView,
  isGuestServiceBelow1024,
  REQUIREMENT,
  type RequirementView,
  type StatusView,
} from '../model.js';
import { socketAnswers, socketPathProblem } from '../socket-file.js';
import { sshTarget } from '../ssh/target.js';
import { otherBuild } from '../version.js';
import { spawnAgent } from './agent-spawn.js';
import { stopAgent } from './agent-stop.js';
import { clientFor, pathsFor } from './context.js';
import { CliError, UsageError } from './errors.js';
import { lastRun } from './log-reader.js';
import { type BootOutcome, followBoot, linkDownReason } from './progress.js';
import { countOf, stateCounts } from './render.js';
import { applyHint, configEditNote } from './served-config.js';
import { describeSiblings, runningSiblings } from './siblings.js';
import { parseSshTarget } from './target.js';
import { complain, say } from './terminal.js';

/** The flags of `tether up` (commands/up.ts). */
export interface UpOptions {
  ssh?: string;
  identity?: string;
  config?: string;
  foreground?: boolean;
  timeout: number;
  logLevel?: string;
}

/** What the steps of one `up` share. */
interface UpRun {
  name: string;
  paths: InstancePaths;
  opts: UpOptions;
  /** When `up` started (Date.now()), for the elapsed times it prints. */
  started: number;
  timeoutMs: number;
  print: (line: string) => void;
}

export async function up(name: string, opts: UpOptions): Promise<void> {
  const started = Date.now();
  const paths = pathsFor(name);
  const changed = prepareConfig(paths, opts);
  const config = loadConfig(paths.config);
  const run: UpRun = { name, paths, opts, started, timeoutMs: opts.timeout * 1000, print: (line) => say(`${line}\n`) };

  if (await socketAnswers(paths.socket)) {
    // One that takes the connection but does not answer (stopped, stuck) is said so at once: nothing to wait for.
    const running = await clientFor(paths, Math.min(run.timeoutMs, 10_000))
      .status()
      .catch((err: Error) => {
        if (err instanceof AgentNotAnsweringError) throw err;
        return null;
      });
    if (running?.state !== 'failed') return followRunning(run, running, changed);
    // Left by an `up` that was interrupted before the boot failed (it stops a failed agent when it sees it fail):
    // a failed boot is not retried, so the agent is started anew.
    const failed = running.requirements.find((r) => r.state === 'failed');
    run.print(
      `instance ${name} has an agent whose boot failed${failed ? ` (requirement ${failed.index}: ${failed.detail})` : ''}; starting it again`,
    );
    await stopAgent(paths, 'tether up: its boot had failed; starting it again');
  }

  checkIdentityFile(`${paths.config}: ssh.identityFile`, config.ssh.identityFile);
  const tooLong = socketPathProblem(paths.socket);
  if (tooLong)
    throw new CliError(`the control socket ${tooLong}: set TETHER_HOME to a shorter directory, or use a shorter name`);
  const siblings = await runningSiblings(paths, config.ssh, loadConfig);
  if (siblings.length > 0)
    complain(
      `tether: warning: ${describeSiblings(siblings)}, the same VM: this instance will find the host ports of its ` +
        `forwards taken (\`tether down ${siblings[0].name}\` first)\n`,
    );
  run.print(`starting instance ${name}: ${sshTarget(config.ssh)} (log: ${paths.currentLog})`);
  if (opts.foreground) await startForeground(run, config);
  else await startBackground(run);
}

/** An agent already runs: says so (and what changed since it started), retries its failed mounts, follows it. */
async function followRunning(run: UpRun, running: StatusView | null, changed: boolean): Promise<void> {
  const { name, paths, opts, print } = run;
  // A foreground `up` is meant to be the agent (a systemd or launchd unit): reporting success would have the
  // unit restarted in a loop.
  if (opts.foreground)
    throw new CliError(`instance ${name} is already running (pid ${readPid(paths) ?? '?'}); stop it first`);
  print(`instance ${name} is already running (pid ${readPid(paths) ?? '?'})`);
  const stale = running ? otherBuild(running.build) : null;
  if (stale) print(`${stale}; \`tether down ${name} && tether up ${name}\` runs this one`);
  // Refused until the user acts (a changed host key, credentials): waiting here would only run out the clock.
  if (running?.ssh.state === 'closed')
    throw new CliError(
      `its SSH connection is refused until you make the fix: ${running.ssh.lastError ?? 'see the log'}; ` +
        `log: ${paths.currentLog}`,
    );
  // Changed by these flags (compared by content), or, without flags that rewrite it, written since the agent read it
  // and different from the config it runs with.
  const rewritten = opts.config !== undefined || opts.ssh !== undefined || opts.identity !== undefined;
  const edited = !rewritten && running !== null ? await configEditNote(paths, running.startedAt) : null;
  if (changed) print(applyHint(paths));
  else if (edited) print(edited);
  if (opts.logLevel)
    print(
      `--log-level ${opts.logLevel} applies from the agent's next start: \`tether down ${name} && tether up ${name} --log-level ${opts.logLevel}\``,
    );
  // Running without a mount that failed (degraded, or the default mount skipped): the user may have fixed the
  // guest since, so try now, not at the next backoff step.
  const mountsUnmet = running?.requirements.some((r) => r.index === REQUIREMENT.mountsReady && r.state !== 'ok');
  const retrying =
    (running?.state === 'degraded' || mountsUnmet) &&
    (await clientFor(paths)
      .retryMounts()
      .catch(() => false));
  if (retrying) print(`trying its failed mounts again`);
  if (running && running.state !== 'ready')
    print(`following it until it is ready (${running.state}); Ctrl-C stops following, not the agent`);
  // Not ours to stop: Ctrl-C only stops following it.
  onInterrupt(() => {
    complain(
      `tether: interrupted; instance ${name} keeps running (\`tether status ${name}\` follows it, \`tether down ${name}\` stops it)\n`,
    );
    return Promise.resolve();
  });
  // A boot still under way is followed from its start; a finished one shows only what happens now.
  const shown =
    running && running.state !== 'starting'
      ? running.requirements.filter((r) => !(retrying && r.index === REQUIREMENT.mountsReady))
      : undefined;
  const outcome = await unlessInterrupted(
    followBoot(clientFor(paths), { timeoutMs: run.timeoutMs, print, start: run.started, shown }),
  );
  return finish(paths, outcome, null);
}

/** `up --foreground`: the agent runs in this process, until it is stopped. */
async function startForeground(run: UpRun, config: LoadedConfig): Promise<void> {
  const { name, paths, opts, print, timeoutMs } = run;
  // Loaded on demand: the agent's modules are what makes the CLI slow to start.
  const { startAgentProcess } = await import('./agent-process.js');
  const proc = await startAgentProcess(paths, config, { logLevel: opts.logLevel, requirementTimeoutMs: timeoutMs });
  const outcome = await followBoot(clientFor(paths), { timeoutMs, print, start: run.started });
  // The agent is this process: stopped here, not signalled like a background one; a degraded one serves on.
  if (outcome.outcome === 'degraded') complain(`tether: ${degradedMessage(paths, outcome)}\n`);
  else await finish(paths, outcome, (reason) => proc.stop(reason).then(() => 'shut down'));
  print(`running in the foreground (pid ${process.pid}); Ctrl-C or \`tether down ${name}\` stops it`);
  // The terminal (or the unit's journal) says why it ended, as `status` does for a stopped instance.
  print(`stopped instance ${name}: ${await proc.done}`);
}

/** The agent detached in the background; `up` follows its boot and stops it when the boot fails. */
async function startBackground(run: UpRun): Promise<void> {
  const { name, paths, opts, print, timeoutMs, started } = run;
  const child = spawnAgent(paths, { logLevel: opts.logLevel, timeoutS: opts.timeout });
  if (child.pid) recordSpawned(paths, child.pid);
  // The agent runs detached (its own session), so Ctrl-C reaches only this process: an `up` given up on (a wrong
  // port that never answers) stops the agent it started, instead of leaving it retrying unseen.
  onInterrupt(async () => {
    complain(`tether: interrupted; stopping the agent of ${name} (\`tether up ${name}\` starts it again)\n`);
    await stopStarted(paths, child, 'tether up: interrupted');
  });
  // Starting Node is not a requirement: a short --timeout must not fail (and stop) an agent still loading.
  const socketWait = Math.min(Math.max(timeoutMs, SOCKET_WAIT_MIN_MS), SOCKET_WAIT_MAX_MS);
  try {
    await unlessInterrupted(waitForSocket(paths, child, socketWait));
  } catch (err) {
    // An agent that never opened its socket (stuck loading, a full disk) would otherwise run on unseen.
    const how = await stopStarted(paths, child, 'tether up: no control socket');
    if (err instanceof CliError && how !== 'not running') err.message += ' (agent stopped)';
    throw err;
  }
  const outcome = await unlessInterrupted(
    followBoot(clientFor(paths), { timeoutMs: timeoutMs - (Date.now() - started), print, start: started }),
  );
  await finish(paths, outcome, (reason) => stopStarted(paths, child, reason));
}

/** How long `up` waits for a new agent's control socket, whatever --timeout says. */
const SOCKET_WAIT_MIN_MS = 10_000;
const SOCKET_WAIT_MAX_MS = 30_000;

/**
 * Stops an agent this `up` started: through its control API, or, before it has a socket or pid file, by signalling
 * the process started. Says how, or `not running`.
 */
async function stopStarted(paths: InstancePaths, child: ChildProcess, reason: string): Promise<string> {
  const how = await stopAgent(paths, reason).catch(() => 'not running');
  if (how !== 'not running' || child.exitCode !== null || child.signalCode !== null || !child.pid) return how;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = (ms: number) => new Promise<false>((r) => setTimeout(() => r(false), ms));
  if ((await Promise.race([exited.then(() => true), timer(5_000)])) === false) {
    child.kill('SIGKILL');
    await Promise.race([exited, timer(5_000)]);
    return 'SIGKILL';
  }
  return 'SIGTERM';
}

/**
 * First use: tether.yaml from -c or the flags. Later: -c replaces it, flags update the ssh section. True when an
 * existing instance's config changed.
 */
function prepareConfig(paths: InstancePaths, opts: UpOptions): boolean {
  const target = opts.ssh ? parseSshTarget(opts.ssh) : undefined;
  const identityFile = opts.identity ? expandHome(opts.identity, process.cwd()) : undefined;
  // Before anything is written: a first `up` with a key that cannot be read must not leave an instance behind.
  checkIdentityFile('-i', identityFile);
  const exists = instanceExists(paths);
  if (opts.config) {
    const source = resolve(opts.config);
    // Refuse a broken file before it replaces a working one, and a key it names that cannot be read before it
    // creates an instance.
    const given = loadConfig(source);
    if (!exists && !identityFile) checkIdentityFile(`${source}: ssh.identityFile`, given.ssh.identityFile);
    ensureInstanceDir(paths);
    const before = exists ? readFileSync(paths.config, 'utf8') : null;
    copyConfigFile(source, paths.config);
    if (target || identityFile) updateConfigFile(paths.config, { ...target, identityFile });
    if (!exists) say(`created instance ${paths.name}: ${paths.config} (from ${source})\n`);
    return before !== null && before !== readFileSync(paths.config, 'utf8');
  }
  if (!exists) {
    if (!target)
      throw new UsageError(
        `instance ${paths.name} does not exist yet; give --ssh [USER@]HOST[:PORT] (or -c FILE) to create it`,
      );
    ensureInstanceDir(paths);
    writeInitialConfig(paths.config, { ...target, identityFile });
    say(`created instance ${paths.name}: ${paths.config}\n`);
    return false;
  }
  ensureInstanceDir(paths);
  return !!(target || identityFile) && updateConfigFile(paths.config, { ...target, identityFile });
}

function stdioTail(paths: InstancePaths): string {
  try {
    const lines = readFileSync(paths.stdioLog, 'utf8').trim().split('\n');
    return lines.slice(-3).join(' | ');
  } catch {
    return '(no output)';
  }
}

async function waitForSocket(paths: InstancePaths, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await socketAnswers(paths.socket))) {
    if (child.signalCode === 'SIGTERM')
      throw new CliError(
        `the agent was stopped while starting (SIGTERM: \`tether down ${paths.name}\`, or another program)`,
      );
    if (child.exitCode !== null || child.signalCode !== null)
      throw new CliError(
        `the agent exited while starting (${child.exitCode ?? child.signalCode}): ${stdioTail(paths)}; see ${paths.stdioLog}`,
      );
    if (Date.now() > deadline)
      throw new CliError(`the agent did not open ${paths.socket} within ${timeoutMs / 1000}s; see ${paths.stdioLog}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A key file that cannot be read is named here, not reported later as a guest that cannot be reached. */
function checkIdentityFile(source: string, file: string | undefined): void {
  if (!file) return;
  try {
    accessSync(file, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new CliError(`${source} ${file} cannot be read (${code}); give another with -i`);
  }
}

/** Reports the boot's outcome; on failure stops the agent with `stop` (null: leave it, it was running already). */
async function finish(
  paths: InstancePaths,
  outcome: BootOutcome,
  /** Stops the agent of a boot that failed; `reason` is what failed. Says how, or `not running`. */
  stop: ((reason: string) => Promise<string>) | null,
): Promise<void> {
  if (outcome.outcome === 'ready') {
    const s = outcome.status;
    say(
      `✓ instance ${paths.name} is ready (agent pid ${s.pid}; forwards: ${stateCounts(s.forwards).join(', ') || 'none'}; log: ${s.logFile})\n`,
    );
    if (s.link?.outdated) complain(`tether: warning: ${s.link.outdated}\n`);
    await warnForwardsNotServing(paths);
    return;
  }
  if (outcome.outcome === 'degraded') throw new CliError(degradedMessage(paths, outcome));
  let message: string;
  if (outcome.outcome === 'gone') {
    const pid = readPid(paths);
    // Asked to stop (`tether down`), its log says by whom; else it crashed, and its last output says why.
    const stopped = lastRun(paths.logs, paths.name).stopReason;
    message = stopped
      ? `the agent stopped while starting: ${stopped}`
      : `the agent went away while starting (${outcome.reason})${pid && !isAlive(pid) ? `; last output: ${stdioTail(paths)}` : ''}`;
  } else {
    const r = outcome.requirement;
    const linkDown = !r && outcome.status?.state === 'degraded' && outcome.status.link?.up === false;
    const what = r
      ? `requirement ${r.index} of ${r.total} (${r.name})`
      : linkDown
        ? 'the link to the guest agent'
        : 'the agent';
    message =
      outcome.outcome === 'failed'
        ? `${what} failed: ${r?.detail ?? 'see the log'}`
        : `timed out waiting for ${what}${timeoutReason(outcome.status, r)}`;
  }
  if (stop && outcome.outcome !== 'gone') {
    const how = await stop(`tether up: ${message}`).catch((err: Error) => {
      if (!(err instanceof AgentNotRunningError)) message += `; stopping the agent failed too: ${err.message}`;
      return 'not running';
    });
    if (how !== 'not running') message += ' (agent stopped)';
  }
  throw new CliError(`${message}; log: ${paths.currentLog}`);
}

const NOT_SERVING: ForwardView['state'][] = ['conflict', 'privileged', 'error'];

/**
 * The forwards that do not serve yet: ready means the agent runs, not that every host port was free. Said on stderr:
 * one line each for those tether.yaml asks for (static rules, unix sockets), one for guest listeners; `up` still
 * succeeds.
 */
async function warnForwardsNotServing(paths: InstancePaths): Promise<void> {
  const forwards = await clientFor(paths, 5_000)
    .forwards()
    .catch(() => []);
  const notServing = forwards.filter((f) => NOT_SERVING.includes(f.state));
  for (const f of notServing) {
    if (f.source !== 'static') continue;
    const host = f.hostAddrs.length > 0 ? f.hostAddrs.join(', ') : '-';
    complain(
      `tether: warning: forward ${f.proto} ${host} → guest ${f.guestAddr} from tether.yaml: ${f.state}` +
        `${f.error ? ` (${f.error})` : ''}\n`,
    );
  }
  for (const line of detectedNotServing(paths.name, notServing)) complain(line);
}

/**
 * What `up` says of guest listeners that do not serve: a warning for those in `conflict` or `error`, and a note for
 * guest services on their own port below 1024, which a host user without privileges cannot bind (a guest's chronyd
 * or MTA is no fault of the setup: doctor warns too), with the command that forwards one from a port it may bind.
 * Exported for its test.
 */
export function detectedNotServing(name: string, forwards: ForwardView[]): string[] {
  const detected = forwards.filter((f) => f.source === 'detected' && NOT_SERVING.includes(f.state));
  const listOf = (fs: ForwardView[], state: boolean) => {
    const list = fs.map((f) => `${f.proto} ${f.guestAddr}${state ? ` ${f.state}` : ''}`);
    return (list.length > 5 ? [...list.slice(0, 5), `${list.length - 5} more`] : list).join(', ');
  };
  const lines: string[] = [];
  const faults = detected.filter((f) => !isGuestServiceBelow1024(f));
  if (faults.length > 0)
    lines.push(
      `tether: warning: ${countOf(faults.length, 'guest listener')} not forwarded on every host address: ${listOf(faults, true)}; ` +
        `\`tether forward ls ${name}\` says why\n`,
    );
  const privileged = detected.filter(isGuestServiceBelow1024);
  const first = privileged[0];
  if (first)
    lines.push(
      `tether: note: ${countOf(privileged.length, 'guest listener')} on ports below 1024 not forwarded (this host user ` +
        `may not listen there): ${listOf(privileged, false)}; to reach one, forward it from another port, e.g. ` +
        `\`tether forward add ${name} ${unprivilegedSpec(first.proto, portOfAddr(first.hostAddrs[0]) ?? 0, portOfAddr(first.guestAddr) ?? 0)}\`\n`,
    );
  return lines;
}

/** A failed requirement the agent runs on without: what failed, that forwards work, and how to follow or stop it. */
function degradedMessage(paths: InstancePaths, outcome: Extract<BootOutcome, { outcome: 'degraded' }>): string {
  const r = outcome.requirement;
  const s = outcome.status;
  return (
    `requirement ${r.index} of ${r.total} (${r.name}) failed: ${r.detail ?? 'see the log'}; the agent keeps running ` +
    `degraded (pid ${s.pid}, ${countOf(s.forwards.forwarding, 'forward')} up) and retries by itself: ` +
    `\`tether status ${paths.name}\` follows it, \`tether down ${paths.name}\` stops it; log: ${paths.currentLog}`
  );
}

/** Why a requirement is still waiting: its own detail, else the SSH layer's last error (requirements 1 and 2). */
function timeoutReason(status: StatusView | null, r: RequirementView | null): string {
  if (!r && status?.state === 'degraded' && status.link?.up === false) return `: ${linkDownReason(status)}`;
  const why = r?.detail ?? (r && r.index <= 2 ? status?.ssh.lastError : null);
  // The waiting detail says the agent was retrying; the message ends with whether it still is.
  return why ? `: ${why.replace(/; retrying$/, '')}` : '';
}

let interrupted = false;

/** On Ctrl-C: runs `then` once, and exits 130 (128 + SIGINT) as a shell expects of an interrupted command. */
function onInterrupt(then: () => Promise<void>): void {
  process.once('SIGINT', () => {
    interrupted = true;
    void then().finally(() => process.exit(130));
  });
}

/**
 * `p`'s outcome, unless Ctrl-C came meanwhile: then the interrupt handler ends the process, and what `p` saw (the
 * agent it stops going away) is not reported as a failure of its own.
 */
function unlessInterrupted<T>(p: Promise<T>): Promise<T> {
  const never = new Promise<T>(() => {});
  return p.then(
    (v) => (interrupted ? never : v),
    (err: unknown) => (interrupted ? never : Promise.reject(err)),
  );
}
