// Who owns what this user may not use: an instance or agent of another user (a `sudo tether up` on a user's
// instance, a TETHER_HOME of root's) would otherwise look like no instance, or a dead agent, to the CLI.
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { resolve, sep } from 'node:path';

/** A path this process may not use, and whose it is. */
export interface Denied {
  path: string;
  owner: string;
}

/** The user name of `uid` from /etc/passwd, else `uid N`. */
function userName(uid: number): string {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (id === String(uid)) return name;
    }
  } catch {
    // no passwd file to ask
  }
  return `uid ${uid}`;
}

function ownerOf(path: string): string {
  try {
    return userName(statSync(path).uid);
  } catch {
    return 'another user';
  }
}

/**
 * The first directory on the way to `path` that this process may not enter, or `path` itself when it may not use it
 * as `mode` says (R_OK to read a file, W_OK to connect to a socket); null when nothing is in the way (`path` may still
 * not exist).
 */
export function deniedAt(path: string, mode = constants.R_OK): Denied | null {
  const parts = resolve(path).split(sep).filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const p = sep + parts.slice(0, i).join(sep);
    try {
      accessSync(p, i < parts.length ? constants.X_OK : mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') return { path: p, owner: ownerOf(p) };
      return null;
    }
  }
  return null;
}

/** `run tether as root (sudo), or …`: what to do about a path of another user's. */
export function runAsOwner(d: Denied): string {
  return `${d.path} is ${d.owner}'s and this user may not use it: run tether as ${d.owner}${d.owner === 'root' ? ' (sudo)' : ''}`;
}
