// Where `tether shell` starts in the guest: the guest path that shows the host's working directory, when a mounted
// location holds it (a developer in ~/proj on the host lands in the same project in the guest, as with
// `limactl shell`). Pure: the caller gives the mounts and resolves symlinks.
import { isAbsolute, relative, sep } from 'node:path';
import type { MountView } from '../model.js';

/** The guest path of host directory `cwd` through the mounted location that holds it most closely, else null. */
export function guestWorkdir(cwd: string, mounts: readonly Pick<MountView, 'location' | 'guestPath' | 'state'>[]) {
  let best: { depth: number; path: string } | null = null;
  for (const m of mounts) {
    if (m.state !== 'mounted' || !m.guestPath) continue;
    const rel = relative(m.location, cwd);
    if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) continue;
    // Nested mounts: the innermost location is the one the guest shows at that path.
    const depth = m.location.split(sep).length;
    if (best && best.depth >= depth) continue;
    best = { depth, path: rel ? `${m.guestPath.replace(/\/$/, '')}/${rel.split(sep).join('/')}` : m.guestPath };
  }
  return best?.path ?? null;
}
