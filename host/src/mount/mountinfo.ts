// Reading the guest's /proc/self/mountinfo: which filesystem (if any) is mounted at a path. Pure parsing; the
// caller fetches the text over SSH. Used for readiness (sshfs mounted) and to find stale mounts to clear. The kernel
// lists a mount under its resolved path, so callers pass the mount point as resolved in the guest (guest-path.ts).

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
