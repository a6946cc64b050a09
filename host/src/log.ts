// Logging for the host agent: pino JSON lines, one child logger per component (`ssh`, `link`, `forward`, `mount`,
// `sftp`, `watch`, `control`, `agent`), written to <instance>/logs/ with size rotation (pino-roll, in-process: no
// worker thread, so the agent's memory stays small).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

export type Component = 'agent' | 'ssh' | 'link' | 'forward' | 'mount' | 'sftp' | 'watch' | 'control' | 'provision';

/** File name prefix of the rotated logs; `current.log` always points at the newest file. */
export const LOG_FILE = 'tether';
export const CURRENT_LOG = 'current.log';

export interface LogOptions {
  /** Directory for rotated files; absent: JSON lines to stdout. */
  dir?: string;
  level?: string;
  /** Rotate when a file reaches this size. */
  size?: string;
  /** Rotated files kept. */
  keep?: number;
}

export async function createLogger(opts: LogOptions = {}): Promise<Logger> {
  const level = opts.level ?? process.env.TETHER_LOG_LEVEL ?? 'info';
  let dest: DestinationStream;
  if (opts.dir) {
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    // Loaded here, not at the top: the CLI imports this module for its constants and never rotates.
    const { default: pinoRoll } = await import('pino-roll');
    dest = (await pinoRoll({
      file: join(opts.dir, LOG_FILE),
      extension: '.log',
      size: opts.size ?? '10m',
      mkdir: true,
      symlink: true,
      limit: { count: opts.keep ?? 5 },
    })) as DestinationStream;
  } else {
    dest = pino.destination({ dest: 1, sync: false });
  }
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger for one component; every line it writes carries `component`. */
export function componentLogger(root: Logger, component: Component, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}

/** A logger that drops everything (tests and library use without an agent). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
