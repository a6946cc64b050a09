// Reading an instance's logs for `tether logs`: the rotated pino files (`tether.N.log`, oldest first), filtering by
// component and minimum level, the last N lines, and following `current.log` across rotation (re-opening when the
// symlink points at a new file); and for `status` of a stopped instance, what its last run left. Reads only; the
// agent owns writing.
import { closeSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CURRENT_LOG, logFileName, logFileNumbers, STDIO_LOG } from '../log-names.js';
import { type LoggedError, problemMessage } from '../model.js';
import { addProblem, problemSubject, settle, trimProblems } from '../problem-subjects.js';

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

export function levelNumber(name: string): number | null {
  return LEVELS[name.toLowerCase()] ?? null;
}

export interface LogFilter {
  components?: string[];
  minLevel?: number;
}

/** Whether a raw line passes the filter; lines that are not JSON pass only when there is no filter. */
export function matches(line: string, f: LogFilter): boolean {
  if (!f.components && f.minLevel === undefined) return true;
  let rec: { component?: unknown; level?: unknown };
  try {
    rec = JSON.parse(line);
  } catch {
    return false;
  }
  if (f.components && !f.components.includes(String(rec.component))) return false;
  if (f.minLevel !== undefined && !(typeof rec.level === 'number' && rec.level >= f.minLevel)) return false;
  return true;
}

/**
 * The rotated files, oldest first, under the directory's real path: the form current.log resolves to, so the two
 * compare equal even when the path to the directory runs through a symlink.
 */
export function logFiles(dir: string): string[] {
  let real = dir;
  try {
    real = realpathSync(dir);
  } catch {}
  return logFileNumbers(real).map((n) => join(real, logFileName(n)));
}

interface TailResult {
  lines: string[];
  /** Where following continues: the file current.log points at and the offset read up to. */
  file: string | null;
  offset: number;
}

/** The last `n` matching lines over all rotated files (all of them when n is undefined). */
export function tail(dir: string, f: LogFilter, n?: number): TailResult {
  const files = logFiles(dir);
  const current = resolveCurrent(dir) ?? files[files.length - 1] ?? null;
  const out: string[] = [];
  let offset = 0;
  // Newest first, stopping as soon as enough lines are collected.
  for (let i = files.length - 1; i >= 0; i--) {
    const text = readFileSync(files[i], 'utf8');
    const complete = text.endsWith('\n') ? text : text.slice(0, text.lastIndexOf('\n') + 1);
    if (files[i] === current) offset = Buffer.byteLength(complete);
    const lines = complete.split('\n').filter((l) => l.length > 0 && matches(l, f));
    out.unshift(...lines);
    if (n !== undefined && out.length >= n) break;
  }
  return { lines: n === undefined ? out : out.slice(Math.max(0, out.length - n)), file: current, offset };
}

function resolveCurrent(dir: string): string | null {
  try {
    return realpathSync(join(dir, CURRENT_LOG));
  } catch {
    return null;
  }
}

function readFrom(file: string, offset: number): Buffer {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const size = statSync(file).size;
    if (size <= offset) return Buffer.alloc(0);
    const buf = Buffer.alloc(size - offset);
    const n = readSync(fd, buf, 0, buf.length, offset);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Follows current.log from (file, offset): emits complete new lines, switches to the new file when the symlink
 * moves (after draining the old one). Polls every `intervalMs`; returns a stop function.
 */
export function follow(
  dir: string,
  start: { file: string | null; offset: number },
  f: LogFilter,
  emit: (line: string) => void,
  intervalMs = 200,
): () => void {
  let file = start.file;
  let offset = start.offset;
  let partial = '';
  const drain = () => {
    if (!file) return;
    try {
      if (statSync(file).size < offset) offset = 0; // truncated
    } catch {
      return;
    }
    const chunk = readFrom(file, offset);
    offset += chunk.length;
    const text = partial + chunk.toString('utf8');
    const cut = text.lastIndexOf('\n');
    partial = cut < 0 ? text : text.slice(cut + 1);
    if (cut < 0) return;
    for (const line of text.slice(0, cut).split('\n')) if (line.length > 0 && matches(line, f)) emit(line);
  };
  const tick = () => {
    drain();
    const now = resolveCurrent(dir);
    if (now && now !== file) {
      drain();
      if (partial) {
        if (matches(partial, f)) emit(partial);
        partial = '';
      }
      file = now;
      offset = 0;
      drain();
    }
  };
  const timer = setInterval(tick, intervalMs);
  tick();
  return () => clearInterval(timer);
}

/** What the last agent run of an instance left in its log, for `status` of a stopped instance. */
interface LastRun {
  /** Its warnings and errors, oldest first (at most `max`). */
  errors: LoggedError[];
  /** The reason on its `stopped` line (`got SIGTERM`, `tether down`, …), that it ended without one, or null (no run found). */
  stopReason: string | null;
  /** The guest agent socket it moved to (the login user's own, see provision), or null when it kept the configured one. */
  guestSocket: string | null;
}

/**
 * What the agent's own output (agent.stdio.log in `dir`) says of a run that ended without stopping: the fatal line of a
 * crash (V8's out-of-memory, an uncaught error), else that it was killed or crashed and where to look.
 */
export function endedWithoutStop(dir: string): string {
  const file = join(dir, STDIO_LOG);
  const fatal = lastFatalLine(file);
  return fatal
    ? `the agent crashed: ${fatal} (see ${file})`
    : `the agent was killed (SIGKILL) or crashed (a crash's stack is in ${file})`;
}

/** The last line of a crash in the tail of a stdio log; null when there is none. */
function lastFatalLine(file: string): string | null {
  let text: string;
  try {
    const size = statSync(file).size;
    const fd = openSync(file, 'r');
    try {
      const length = Math.min(size, FATAL_TAIL_BYTES);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, size - length);
      text = buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
  const lines = text.split('\n').filter((l) => FATAL_LINE.test(l));
  return lines.length > 0 ? lines[lines.length - 1].trim().slice(0, 300) : null;
}

/** A V8 fatal error (`FATAL ERROR: … JavaScript heap out of memory`) or an uncaught exception's first line. */
const FATAL_LINE = /FATAL ERROR|out of memory|^\w*Error: /;
const FATAL_TAIL_BYTES = 64 * 1024;

/** Reads back from the newest `host agent for NAME starting` line (within the last `scan` lines). */
export function lastRun(dir: string, name: string, max = 10, scan = 5_000): LastRun {
  const records: Record<string, unknown>[] = [];
  for (const line of tail(dir, {}, scan).lines) {
    try {
      records.push(JSON.parse(line));
    } catch {}
  }
  const start = records.findLastIndex((r) => r.msg === `host agent for ${name} starting`);
  const run = records.slice(Math.max(0, start));
  const errors: (LoggedError & { subject: string })[] = [];
  for (const r of run) {
    if (typeof r.level !== 'number' || r.level < LEVELS.info) continue;
    const component = String(r.component ?? 'agent');
    for (const e of errors) settle(e, component, r, String(r.time));
    if (r.level >= LEVELS.warn) {
      const problem = { time: String(r.time), component, msg: problemMessage(String(r.msg), r), resolvedAt: null };
      addProblem(errors, { ...problem, subject: problemSubject(component, r) }, Number.POSITIVE_INFINITY);
    }
  }
  const stopped = run.findLast((r) => r.msg === `host agent for ${name} stopped`);
  const stopReason =
    typeof stopped?.reason === 'string'
      ? stopped.reason
      : start >= 0 && !stopped
        ? `its log ends without a stop: ${endedWithoutStop(dir)}`
        : null;
  const moved = run.findLast((r) => typeof r.msg === 'string' && r.msg.startsWith('guest agent socket is '));
  const guestSocket = typeof moved?.socket === 'string' ? moved.socket : null;
  trimProblems(errors, max);
  return { errors: errors.map(({ subject: _, ...e }) => e), stopReason, guestSocket };
}
