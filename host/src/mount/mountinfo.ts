// Reading the guest's /proc/self/mountinfo: which filesystem (if any) is mounted at a path. Parsing here, of text the
// caller fetches over SSH (to find stale mounts to clear), and the same check as a shell command run in the guest
// (a mount's start command waits with it until sshfs has mounted). The kernel lists a mount under its resolved path,
// so callers pass the mount point as resolved in the guest (guest-path.ts).
import { shellQuote } from '../ssh/shell-quote.js';

/** Undoes the kernel's octal escapes in mountinfo paths (`\040` for a space, `\134` for a backslash...). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** The filesystem type of the last (topmost) mount at `mountPoint` (a resolved path), or null when there is none. */
export function mountedFsType(mountinfo: string, mountPoint: string): string | null {
  let found: string | null = null;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(' ');
    if (fields.length < 5 || unescapeMountPath(fields[4]) !== mountPoint) continue;
    found = line.slice(sep + 3).split(' ')[0] ?? null;
  }
  return found;
}

/** sshfs mounts show up as `fuse.sshfs` (or `fuse` on some older kernels/libfuse builds). */
export function isSshfsType(fsType: string | null): boolean {
  return fsType === 'fuse.sshfs' || fsType === 'fuse';
}

/** A path as mountinfo writes it: space, tab, newline and backslash as octal escapes. */
function escapeMountPath(path: string): string {
  return path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * Shell command that exits 0 when the topmost mount at `mountPoint` (resolved) is sshfs's: mountedFsType and
 * isSshfsType in POSIX awk (mawk, busybox awk). The path goes in through the environment, as awk -v would undo its
 * backslashes, and is compared in mountinfo's escaped form.
 */
export function sshfsMountedCommand(mountPoint: string, mountinfo = '/proc/self/mountinfo'): string {
  const topmostIsSshfs =
    'BEGIN { p = ENVIRON["P"] } { s = index($0, " - "); split(substr($0, 1, s - 1), f, " "); ' +
    'if (f[5] == p) t = substr($0, s + 3) } END { split(t, g, " "); exit !(g[1] == "fuse.sshfs" || g[1] == "fuse") }';
  return `P=${shellQuote(escapeMountPath(mountPoint))} awk ${shellQuote(topmostIsSshfs)} ${shellQuote(mountinfo)}`;
}
