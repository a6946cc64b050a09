// Failures of the host's filesystem that the guest only sees as a bare SFTP status (sshfs turns most into EIO): a
// full disk, a quota, an I/O error, a read-only remount, descriptors running out. Each is logged as a warning with
// the request and the host path it hit, at most once a minute per kind and session, with how many went unlogged.
// Everything else a request can fail with (no such file, permission denied) is the guest's business and stays at
// debug level.

import { displayPath } from './paths.js';
import type { SftpLogger } from './server.js';

/** errno codes that say the host cannot take or give data, whatever the guest asks. */
const HOST_TROUBLE = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EMFILE', 'ENFILE', 'ESTALE']);
const REPEAT_MS = 60_000;

interface Seen {
  loggedAt: number;
  unlogged: number;
}

export class HostTrouble {
  private readonly seen = new Map<string, Seen>();

  constructor(
    private readonly log: SftpLogger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Looks at a request's failure; logs it when it is host trouble not logged within the last minute. */
  note(op: string, err: unknown): void {
    const e = err as NodeJS.ErrnoException & { hostPath?: string };
    const code = e?.code;
    if (!code || !HOST_TROUBLE.has(code)) return;
    const now = this.now();
    const seen = this.seen.get(code);
    if (seen && now - seen.loggedAt < REPEAT_MS) {
      seen.unlogged++;
      return;
    }
    // A request by path names it in the message already; one on a handle gets it from onHandle (ops.ts).
    const path = e.hostPath === undefined ? undefined : displayPath(e.hostPath);
    const more = seen?.unlogged ? ` (${seen.unlogged} more like it in the last minute)` : '';
    this.seen.set(code, { loggedAt: now, unlogged: 0 });
    this.log.warn(
      { op, errno: code, path: path ?? null },
      `sftp ${op}${path ? ` of ${path}` : ''} failed on the host: ${e.message}${more}`,
    );
  }
}
