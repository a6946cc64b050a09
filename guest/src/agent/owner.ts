// Resolves the `--socket-owner` user to a uid/gid with the system's own tools (`getent passwd`, then `id`), so the
// guest needs no native modules. Owns only that lookup.
import { execFileSync } from 'node:child_process';

export interface Owner {
  user: string;
  uid: number;
  gid: number;
}

function run(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function parseId(text: string | null): number | null {
  if (text === null || !/^\d+$/.test(text)) return null;
  return Number(text);
}

/** uid and primary gid of `user` (a name or a numeric uid); throws naming the user when it does not exist. */
export function resolveOwner(user: string): Owner {
  const entry = run('getent', ['passwd', user]);
  const fields = entry?.split('\n')[0]?.split(':');
  if (fields && fields.length >= 4) {
    const uid = parseId(fields[2]);
    const gid = parseId(fields[3]);
    if (uid !== null && gid !== null) return { user, uid, gid };
  }
  const uid = parseId(run('id', ['-u', user]));
  const gid = parseId(run('id', ['-g', user]));
  if (uid !== null && gid !== null) return { user, uid, gid };
  throw new Error(`socket owner ${JSON.stringify(user)}: no such user (getent passwd and id found nothing)`);
}
