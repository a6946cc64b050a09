// The process's limit on open files: for the agent's start line (every forwarded connection holds a file descriptor
// on the host, so a low limit caps concurrent connections; a background agent raises it: cli/agent-spawn.ts) and for
// the SFTP server's handle limit.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Below this many, the agent warns at start. */
const LOW_FILE_LIMIT = 4096;

type FileLimit = number | 'unlimited' | null;

let known: FileLimit | undefined;

/**
 * The soft limit on open files (it does not change while the process runs): from /proc/self/limits where there is
 * one, else through a shell (node has no getrlimit; a child inherits the limit); null when neither says.
 */
export function openFileLimit(): FileLimit {
  known ??= parseLimit(procLimit() ?? shellLimit());
  return known;
}

function procLimit(): string | null {
  try {
    return /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

function shellLimit(): string | null {
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -S -n'], { encoding: 'utf8', timeout: 5_000 });
  return r.status === 0 ? (r.stdout?.trim() ?? null) : null;
}

function parseLimit(out: string | null): FileLimit {
  if (out === 'unlimited') return out;
  const n = Number(out);
  return out && Number.isInteger(n) && n > 0 ? n : null;
}

/** The warning for a limit under LOW_FILE_LIMIT; null when it is high enough or unknown. */
export function lowFileLimitWarning(limit: FileLimit): string | null {
  if (typeof limit !== 'number' || limit >= LOW_FILE_LIMIT) return null;
  return (
    `open files are limited to ${limit} (ulimit -n): forwarded connections beyond about ${Math.max(0, limit - 64)} ` +
    `at once will be refused; raise the limit before starting tether (ulimit -n ${LOW_FILE_LIMIT * 16}, ` +
    'LimitNOFILE= in a systemd unit)'
  );
}
