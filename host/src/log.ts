// Logging for the host agent: pino JSON lines, one child logger per component (`ssh`, `link`, `forward`, `mount`,
// `sftp`, `watch`, `control`, `agent`), written to <instance>/logs/ with size rotation (log-file.ts, in-process: no
// worker thread, so the agent's memory stays small).
import { type DestinationStream, type Logger, pino } from 'pino';
import { openLogFile } from './log-file.js';
import type { Component } from './log-names.js';

export type { Logger } from 'pino';

interface LogOptions {
  /** Directory for rotated files; absent: JSON lines to stdout. */
  dir?: string;
  level?: string;
  /** Rotate when a file reaches this many bytes (default 10 MiB). */
  maxBytes?: number;
  /** Rotated files kept. */
  keep?: number;
}

export async function createLogger(opts: LogOptions = {}): Promise<Logger> {
  const level = opts.level ?? process.env.TETHER_LOG_LEVEL ?? 'info';
  let dest: DestinationStream;
  if (opts.dir) {
    dest = openLogFile({ dir: opts.dir, maxBytes: opts.maxBytes ?? 10 * 1024 * 1024, keep: opts.keep ?? 5 });
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
