// Hosting one VM's agent in this process (agent-main.ts, which `up` spawns detached, and `up --foreground`):
// refuses when an agent already answers or holds ha.pid, claims ha.pid, starts the HostAgent, serves the control
// API on ha.sock, and on shutdown (API, SIGTERM, SIGINT) stops everything and removes the socket and pid file it
// created.

import { runAgent } from '../agent/run.js';
import type { LoadedConfig } from '../config/load.js';
import { type ControlServer, startControlServer } from '../control/server.js';
import { lowFileLimitWarning, openFileLimit } from '../file-limit.js';
import { claimPidFile, type InstancePaths, readPid, removeRuntimeFiles } from '../instance.js';
import { componentLogger, createLogger, type Logger } from '../log.js';
import { ignoreStdioErrors } from '../log-file.js';
import type { AgentApi } from '../model.js';
import { socketAnswers } from '../socket-file.js';
import { CliError } from './errors.js';

export interface AgentProcess {
  agent: AgentApi;
  control: ControlServer;
  log: Logger;
  /** Settles when boot requirements are done (rejects with the failed one). */
  ready: Promise<void>;
  /** Resolves, with why it stopped, once the agent stopped and the runtime files are gone. */
  done: Promise<string>;
  stop(reason: string): Promise<void>;
}

/** Uncaught exceptions the agent logs and survives within CRASH_WINDOW_MS; one more stops it. */
const CRASHES_TOLERATED = 10;
const CRASH_WINDOW_MS = 60_000;

interface AgentProcessOptions {
  logLevel?: string;
  /** Deadline of each boot requirement (`tether up --timeout`). */
  requirementTimeoutMs?: number;
  /** Handle SIGTERM/SIGINT by stopping (default true). */
  signals?: boolean;
}

export async function startAgentProcess(
  paths: InstancePaths,
  config: LoadedConfig,
  opts: AgentProcessOptions = {},
): Promise<AgentProcess> {
  if (await socketAnswers(paths.socket)) {
    const pid = readPid(paths);
    throw new CliError(`instance ${paths.name} is already running${pid ? ` (pid ${pid})` : ''}`);
  }
  // Claimed before anything starts, so a second agent stops here and `down` finds this one while it boots.
  const owner = claimPidFile(paths);
  if (owner) throw new CliError(`instance ${paths.name} is already running or starting (pid ${owner})`);
  ignoreStdioErrors();
  const log = await createLogger({ dir: paths.logs, level: opts.logLevel });
  const agentLog = componentLogger(log, 'agent');
  const openFiles = openFileLimit();
  agentLog.info({ config: paths.config, openFiles }, `host agent for ${paths.name} starting`);

  const { agent, ready } = await runAgent(paths.name, config, {
    instanceDir: paths.dir,
    logger: log,
    logFile: paths.currentLog,
    requirementTimeoutMs: opts.requirementTimeoutMs,
  });
  // Through the agent's logger, so `status` lists it with the other warnings.
  const lowLimit = lowFileLimitWarning(openFiles);
  if (lowLimit) agent.logger('agent').warn({ openFiles }, lowLimit);

  let finished!: (reason: string) => void;
  const done = new Promise<string>((resolve) => {
    finished = resolve;
  });
  let stopping: Promise<void> | null = null;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      await agent.stop(reason).catch((err: Error) => agentLog.error({ err: err.message }, 'agent stop failed'));
      await control?.close();
      // Only our own files: a second agent that lost the race must not remove the first one's socket.
      if (readPid(paths) === process.pid) removeRuntimeFiles(paths);
      agentLog.info({ reason }, `host agent for ${paths.name} stopped`);
      await new Promise<void>((resolve) => log.flush(() => resolve()));
      finished(reason);
    })();
    return stopping;
  };

  let control: ControlServer | undefined;
  try {
    control = await startControlServer({
      socketPath: paths.socket,
      agent,
      log: agent.logger('control'),
      onShutdown: (reason) => void stop(reason),
    });
  } catch (err) {
    await agent.stop(`control API failed: ${(err as Error).message}`);
    if (readPid(paths) === process.pid) removeRuntimeFiles(paths);
    throw err;
  }

  if (opts.signals !== false) {
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const)
      process.once(signal, () => void stop(`got ${signal}`));
    // A promise some component forgot to handle is a bug to log, not a reason to drop every forward and mount.
    process.on('unhandledRejection', (err) =>
      agentLog.error(
        { err },
        `unhandled rejection (a bug; the agent keeps running): ${(err as Error)?.message ?? err}`,
      ),
    );
    // Nor is an exception from a callback (a timer, a socket event), as long as it stays an exception: one that
    // keeps coming stops the agent, with its reason logged where `status` reads it.
    const crashes: number[] = [];
    process.on('uncaughtException', (err) => {
      const now = Date.now();
      crashes.push(now);
      while (crashes[0] < now - CRASH_WINDOW_MS) crashes.shift();
      if (crashes.length <= CRASHES_TOLERATED) {
        agentLog.error({ err }, `uncaught exception (a bug; the agent keeps running): ${err.message}`);
        return;
      }
      agentLog.fatal({ err }, `uncaught exception: ${err.message}`);
      void stop(`${crashes.length} uncaught exceptions within a minute, the last: ${err.message}`).then(() =>
        process.exit(1),
      );
    });
  }
  return { agent, control, log, ready, done, stop };
}
