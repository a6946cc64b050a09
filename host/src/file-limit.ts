// The process's limit on open files, for the agent's start line: every forwarded connection holds a file descriptor
// on the host, so a low limit caps concurrent connections (a background agent raises it: cli/agent-spawn.ts).
import { spawnSync } from 'node:child_process';

/** Below this many, the agent warns at start. */
export const LOW_FILE_LIMIT = 4096;

/** The soft limit on open files, read through a shell (node has no getrlimit; a child inherits the limit). */
export function openFileLimit(): number | 'unlimited' | null {
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -S -n'], { encoding: 'utf8', timeout: 5_000 });
  const out = r.stdout?.trim();
  if (r.status !== 0 || !out) return null;
  if (out === 'unlimited') return out;
  const n = Number(out);
  return Number.isInteger(n) && n > 0 ? n : null;
}

/** The warning for a limit under LOW_FILE_LIMIT; null when it is high enough or unknown. */
export function lowFileLimitWarning(limit: number | 'unlimited' | null): string | null {
  if (typeof limit !== 'number' || limit >= LOW_FILE_LIMIT) return null;
  return (
    `open files are limited to ${limit} (ulimit -n): forwarded connections beyond about ${Math.max(0, limit - 64)} ` +
    `at once will be refused; raise the limit before starting tether (ulimit -n ${LOW_FILE_LIMIT * 16}, ` +
    'LimitNOFILE= in a systemd unit)'
  );
}
