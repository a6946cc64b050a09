// The agent's log files: JSON lines appended to <dir>/tether.N.log, the next file (N+1) once one reaches its size,
// only the newest files kept, and current.log a symlink to the file being written (what `tether logs -f` follows).
// Writes go through pino's own destination, synchronously: the agent logs state changes, not traffic, and a line
// written before a crash is then on disk, in the file its size accounting says. A rotation reopens the destination
// on the next file.
import { renameSync, statSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type DestinationStream, pino } from 'pino';
import { CURRENT_LOG, logFileName, logFileNumbers } from './log-names.js';
import { makeDirs } from './make-dirs.js';

interface LogFileOptions {
  dir: string;
  /** Start the next file once the current one has this many bytes. */
  maxBytes: number;
  /** Files kept, the current one included. */
  keep: number;
}

/** A destination with pino's flush, for a clean exit. */
export interface LogFileStream extends DestinationStream {
  flush(cb?: (err?: Error) => void): void;
}

/**
 * A background agent's stdout and stderr are its stdio log, on the same disk as the log: once that disk is full, a
 * write error on them would be an unhandled 'error' event, fatal to an agent that serves on without its log.
 */
export function ignoreStdioErrors(): void {
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
}

/** Opens the log directory for appending: continues the newest file unless it is already full. */
export function openLogFile(opts: LogFileOptions): LogFileStream {
  const { dir, maxBytes, keep } = opts;
  makeDirs(dir, 0o700);
  let n = logFileNumbers(dir).at(-1) ?? 1;
  let size = fileSize(join(dir, logFileName(n)));
  if (size >= maxBytes) {
    n++;
    size = 0;
  }
  // Owner-only like the rest of the instance directory: the log names paths, addresses and guest processes.
  const dest = pino.destination({ dest: join(dir, logFileName(n)), sync: true, mkdir: true, mode: 0o600 });
  // A full disk or a removed directory must not take the agent down with it; there is nowhere to log it but stderr,
  // once a minute at most (every line fails alike).
  let reportedAt = Number.NEGATIVE_INFINITY;
  dest.on('error', (err: Error) => {
    if (performance.now() - reportedAt < 60_000) return;
    reportedAt = performance.now();
    process.stderr.write(`tether: cannot write the log in ${dir}: ${err.message} (said once a minute)\n`);
  });
  const settle = () => {
    try {
      pointCurrentAt(dir, n);
      for (const old of logFileNumbers(dir)) if (old <= n - keep) unlinkSync(join(dir, logFileName(old)));
    } catch (err) {
      process.stderr.write(`tether: log rotation in ${dir}: ${(err as Error).message}\n`);
    }
  };
  settle();
  const rotate = () => {
    // Counted from zero either way: a rotation that fails (EMFILE, EACCES) is retried a file's worth of lines later,
    // while the lines keep going to the current file.
    size = 0;
    try {
      dest.reopen(join(dir, logFileName(n + 1)));
    } catch (err) {
      process.stderr.write(
        `tether: cannot start log file ${logFileName(n + 1)} in ${dir}: ${(err as Error).message}\n`,
      );
      return;
    }
    n++;
    settle();
  };
  return {
    write(line: string) {
      dest.write(line);
      size += Buffer.byteLength(line);
      if (size >= maxBytes) rotate();
    },
    flush(cb) {
      dest.flush(cb);
    },
  };
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Replaces the current.log symlink in one step (a reader never finds it missing). */
function pointCurrentAt(dir: string, n: number): void {
  const tmp = join(dir, `.${CURRENT_LOG}.${process.pid}`);
  try {
    unlinkSync(tmp);
  } catch {}
  symlinkSync(logFileName(n), tmp);
  renameSync(tmp, join(dir, CURRENT_LOG));
}
