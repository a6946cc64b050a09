// Entry point that runs one VM's host agent in this process: creates the logger (<instanceDir>/logs, rotated) and
// starts a HostAgent, with the mount manager when the config has mounts. `tether up` and the tests call it. The
// mount, SFTP and watch modules are loaded only for a config that has mounts: an agent that only
// forwards ports does not carry them. In a process started with --expose-gc it also starts the buffer collector.
// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';
import type { Config } from '../config/schema.js';
import { instanceFiles } from '../instance.js';
import { createLogger, type Logger } from '../log.js';
import { processBufferCollector } from './buffer-gc.js';
import { HostAgent, type HostAgentOptions } from './host-agent.js';
import { ProblemRing } from './problems.js';

export interface RunAgentOptions extends Omit<HostAgentOptions, 'logger'> {
  /** Default: pino to <instanceDir>/logs. */
  logger?: Logger;
  logLevel?: string;
}

export interface RunningAgent {
  agent: HostAgent;
  /** Settles when the boot requirements are done; rejects with the first that failed. */
  ready: Promise<void>;
}

/** Creates and starts the agent; returns at once so callers can serve status while it boots. */
export async function runAgent(name: string, config: Config, opts: RunAgentOptions): Promise<RunningAgent> {
  const collector = processBufferCollector();
  const logger =
    opts.logger ?? (await createLogger({ dir: instanceFiles(opts.instanceDir).logs, level: opts.logLevel }));
  // Mounts come from the config unless the caller brings its own driver (tests, benchmarks). Their warnings and
  // errors go to status with the agent's own.
  const problems = opts.problems ?? new ProblemRing(20);
  const mountsOptional = 'mountsDefaulted' in config && config.mountsDefaulted === true;
  const mounts =
    opts.mounts ??
    (config.mounts?.length
      ? (await import('./mounts.js')).agentMounts(config.mounts, problems.tap(logger, 'mount'), mountsOptional)
      : undefined);
  // The collector checks at the pace of the SSH traffic too: its timer alone fires late while the event loop is busy
  // with that traffic, which is when garbage piles up fastest.
  const ssh = collector ? { onTraffic: collector.traffic, ...opts.ssh } : opts.ssh;
  const agent = new HostAgent(name, config, { mountsOptional, ...opts, ssh, logger, mounts, problems });
  const ready = agent.start();
  ready.catch(() => {}); // observed by the caller; the agent's status keeps the failure
  return { agent, ready };
}
