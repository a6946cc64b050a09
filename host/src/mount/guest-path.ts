// Where a configured guest path really is, found in the guest: `~` and `~/...` expand against the SSH user's $HOME
// there (the host cannot know it), and symlinks are resolved, because the kernel lists a mount under its resolved
// path in /proc/self/mountinfo (sshfs mounts at /var/home/me when told /home/me and /home -> /var/home, as on Fedora
// Atomic): comparing the configured path would never see the mount. Owns the command and the parsing of its output;
// callers keep showing the configured path to the user.
import type { Client } from 'ssh2';
import { guestText } from '../inert-text.js';
import { describeExit, execOn } from '../ssh/exec.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { unrunScript } from '../ssh/unrun-script.js';

/** A shell word for a configured guest path: `~` becomes "$HOME", the rest is quoted. */
export function guestPathWord(path: string): string {
  if (path === '~') return '"$HOME"';
  if (path.startsWith('~/')) return path.length === 2 ? '"$HOME"' : `"$HOME"/${shellQuote(path.slice(2))}`;
  return shellQuote(path);
}

interface ResolvedGuestPath {
  /** Absolute, with every symlink resolved (as mountinfo shows it). */
  path: string;
  /** The guest user's login shell ($SHELL), for hints about its startup files; null when unset. */
  shell: string | null;
}

/**
 * The command: create the directory (best effort: the requirement check reports why it cannot be created), then
 * print the login shell and the directory's physical path. `cd` + `pwd -P` is POSIX; it fails on a dead FUSE mount
 * ("transport endpoint is not connected", left behind by a lost connection), where `readlink -f` still resolves the
 * path without entering the mount. Failing both, the path is printed as given.
 */
export function resolveCommand(path: string): string {
  return [
    `P=${guestPathWord(path)}`,
    'mkdir -p -- "$P" 2>/dev/null',
    `printf '%s\\n' "$SHELL"`,
    '{ cd -- "$P" 2>/dev/null && pwd -P; } || readlink -f -- "$P" 2>/dev/null || printf \'%s\\n\' "$P"',
  ].join('; ');
}

/** Expands and resolves `path` in the guest; throws with the guest's stderr when that fails. */
export async function resolveGuestPath(client: Client, path: string): Promise<ResolvedGuestPath> {
  const r = await execOn(client, resolveCommand(path));
  const nl = r.stdout.indexOf('\n');
  // The path is everything after the shell's line but its final newline (a path may itself contain newlines).
  const resolved = r.code === 0 && nl >= 0 ? r.stdout.slice(nl + 1).replace(/\n$/, '') : '';
  if (!resolved.startsWith('/')) {
    const why =
      unrunScript(r) ??
      (guestText(r.stderr.trim()) || `${describeExit(r)}, output ${JSON.stringify(r.stdout.slice(-200))}`);
    throw new Error(`cannot resolve ${path} in the guest: ${why}`);
  }
  return { path: resolved, shell: r.stdout.slice(0, nl) || null };
}

/** `path`, plus where it resolves to when that differs, for messages. */
export function describeGuestPath(path: string, resolved: string | null): string {
  return resolved && resolved !== path ? `${path} (${resolved})` : path;
}
