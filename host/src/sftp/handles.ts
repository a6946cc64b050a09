// The session's open handles: files (a host fd) and directories (an fs.Dir being listed). Owns allocation of
// opaque handle strings, the handle limits (the session's, and the one all sessions of the process share) and
// closing everything when the session ends.

import { close as closeFd, closeSync, type Dir } from 'node:fs';
import { openFileLimit } from '../file-limit.js';
import { FX } from './constants.js';
import { SftpStatusError } from './errors.js';

let defaultLimit: number | null = null;

/** The process's soft limit on open files; 4,096 where it cannot be read. */
function descriptorLimit(): number {
  const limit = openFileLimit();
  return limit === 'unlimited' ? Number.MAX_SAFE_INTEGER : (limit ?? 4096);
}

/**
 * The handle limit of a session unless configured: a quarter of the process's open-file limit (every handle is a
 * descriptor, and the forwards and other mounts need theirs), from 1,024 to 65,536. OpenSSH's sftp-server is bounded
 * by the descriptor limit alone; a fixed 1,024 refused the next open of a guest program holding that many files.
 */
export function defaultHandleLimit(): number {
  defaultLimit ??= Math.min(65_536, Math.max(1024, Math.floor(descriptorLimit() / 4)));
  return defaultLimit;
}

/**
 * Handles open in every session of the process, against one limit: each session may hold a quarter of the
 * descriptors, so four busy mounts would otherwise take them all, and forwards and the control socket need theirs.
 */
export class HandleBudget {
  open = 0;
  constructor(readonly max: number) {}
}

let processBudget: HandleBudget | null = null;

/** The budget the sessions of this process share: half its descriptors, and never less than one session's limit. */
function processHandleBudget(): HandleBudget {
  processBudget ??= new HandleBudget(Math.max(defaultHandleLimit(), Math.floor(descriptorLimit() / 2)));
  return processBudget;
}

interface FileHandle {
  kind: 'file';
  fd: number;
  /** Host path as a byte string (paths.ts), for FSTATVFS and change reports. */
  path: string;
  /** When a write through it was last reported as a change (server.ts opWrite), on the monotonic clock. */
  reportedAt?: number;
}

interface DirHandle {
  kind: 'dir';
  dir: Dir;
  path: string;
  /** What '..' lists: the parent, or for the export root the root itself. */
  parent: string;
  /** '.' and '..' are listed first, before what the host directory stream yields. */
  dotsSent: boolean;
  eof: boolean;
}

export type Handle = FileHandle | DirHandle;

function closeFdAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => closeFd(fd, (err) => (err ? reject(err) : resolve())));
}

export class HandleTable {
  private readonly open = new Map<number, Handle>();
  // Handle numbers are never reused within a session, so a stale handle can never reach a newer file.
  private next = 1;

  constructor(
    private readonly max: number,
    private readonly budget: HandleBudget = processHandleBudget(),
  ) {}

  get size(): number {
    return this.open.size;
  }

  /** Throws SSH_FX_FAILURE when the table or the process is full; check before opening so no fd leaks. */
  ensureRoom(): void {
    if (this.open.size >= this.max) {
      throw new SftpStatusError(FX.FAILURE, `too many open handles (limit ${this.max})`);
    }
    if (this.budget.open >= this.budget.max) {
      throw new SftpStatusError(
        FX.FAILURE,
        `too many open handles in all of this host agent's mounts together (limit ${this.budget.max})`,
      );
    }
  }

  add(h: Handle): Buffer {
    this.budget.open++;
    const id = this.next;
    this.next = (this.next + 1) >>> 0 || 1;
    this.open.set(id, h);
    const token = Buffer.allocUnsafe(4);
    token.writeUInt32BE(id, 0);
    return token;
  }

  file(token: Buffer): FileHandle {
    const h = this.get(token);
    if (h.kind !== 'file') throw new SftpStatusError(FX.FAILURE, 'handle is a directory, not a file');
    return h;
  }

  dir(token: Buffer): DirHandle {
    const h = this.get(token);
    if (h.kind !== 'dir') throw new SftpStatusError(FX.FAILURE, 'handle is a file, not a directory');
    return h;
  }

  get(token: Buffer): Handle {
    const h = token.length === 4 ? this.open.get(token.readUInt32BE(0)) : undefined;
    if (!h) throw new SftpStatusError(FX.FAILURE, `invalid handle ${token.toString('hex')}`);
    return h;
  }

  /** Synchronous like the rest of the request path (see server.ts); closing a local fd takes microseconds. */
  close(token: Buffer): void {
    const h = this.get(token);
    this.open.delete(token.readUInt32BE(0));
    this.budget.open--;
    if (h.kind === 'file') closeSync(h.fd);
    else h.dir.closeSync();
  }

  /** Closes every handle; errors are ignored because the session is ending. */
  async closeAll(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    this.budget.open -= all.length;
    await Promise.allSettled(all.map(closeHandle));
  }
}

function closeHandle(h: Handle): Promise<void> {
  return h.kind === 'file' ? closeFdAsync(h.fd) : h.dir.close();
}
