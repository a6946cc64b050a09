// Tells whether a directory is an sshfs (FUSE) mount point, from /proc/self/mountinfo. Owns the mountinfo parsing and
// a short-lived cache (the host mounts first and sends events afterwards, so a "no" must not be remembered long).
// mountinfo lists mounts under their resolved paths, so the directory must be given resolved (realpath).
import { readFileSync } from 'node:fs';
import { unescapeMountPath } from '../mount-table.js';

/** Whether `root`, a resolved absolute path, is a mount the applier may touch. */
export type MountCheck = (root: string) => boolean;

/** Mount points whose filesystem type is `fstype`, parsed from mountinfo text. */
export function mountPointsOfType(mountinfo: string, fstype: string): Set<string> {
  const out = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(' ');
    const type = line.slice(sep + 3).split(' ')[0];
    if (type === fstype && fields[4] !== undefined) out.add(unescapeMountPath(fields[4]));
  }
  return out;
}

/** A MountCheck for `fuse.sshfs` reading `mountinfoPath`, caching each read for `ttlMs`. */
export function sshfsMountCheck(mountinfoPath = '/proc/self/mountinfo', ttlMs = 2_000): MountCheck {
  let cached: Set<string> | null = null;
  let readAt = 0;
  return (root) => {
    const now = performance.now(); // monotonic: a clock stepped back must not freeze the cache
    if (!cached || now - readAt > ttlMs) {
      try {
        cached = mountPointsOfType(readFileSync(mountinfoPath, 'utf8'), 'fuse.sshfs');
      } catch {
        cached = new Set();
      }
      readAt = now;
    }
    return cached.has(root);
  };
}
