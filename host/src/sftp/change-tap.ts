// Which host paths a guest's requests change, in a session served by OpenSSH's sftp-server, so the mount's host
// watch can drop the echo of the guest's own changes (tether's own server reports them itself: SftpServerOptions
// .onChange). Reads the leading fields of the requests that change something and of the replies to them, as the
// marker filter (marker-filter.ts) frames them; it never alters or holds a byte.
//
// Each change is reported twice: as its request passes, so the report is there before the watch can see the host
// event, and as its reply passes, after sftp-server made the change, so the watch's ctime check holds even when
// the request waited behind others.
import { resolve } from 'node:path';
import { EXT, FXF, FXP } from './constants.js';
import { PacketReader } from './packet.js';
import { displayPath } from './paths.js';
import type { ChangeListener } from './server.js';

/** Request types the tap reads whole (they are small); WRITE is read only up to WRITE_HEAD. */
export const TAPPED_REQUESTS: ReadonlySet<number> = new Set([
  FXP.OPEN,
  FXP.CLOSE,
  FXP.SETSTAT,
  FXP.FSETSTAT,
  FXP.REMOVE,
  FXP.MKDIR,
  FXP.RMDIR,
  FXP.RENAME,
  FXP.SYMLINK,
  FXP.EXTENDED,
]);

/** Length prefix, type, id and a handle of at most 256 bytes (the draft's bound; sftp-server's take 4). */
export const HEAD_BYTES = 4 + 1 + 4 + 4 + 256;

const MUTATING_OPEN = FXF.WRITE | FXF.APPEND | FXF.CREAT | FXF.TRUNC;
/** Writes through one handle are reported at most this often (as the builtin server does). */
const WRITE_REPORT_MS = 5;
/** Bounds against a guest that never closes handles or a server that never answers: beyond them, nothing is kept. */
const MAX_HANDLES = 4096;
const MAX_PENDING = 4096;

interface OpenFile {
  path: string;
  reportedAt: number | undefined;
  /** Written or changed since the last report: its CLOSE is reported. */
  dirty: boolean;
}

interface Pending {
  paths: string[];
  /** The path among them whose name the request takes away (a remove, a rename's source). */
  removes?: string;
  /** An OPEN for writing: its HANDLE reply names the file's handle. */
  opens?: string;
}

export class ChangeTap {
  private readonly handles = new Map<string, OpenFile>();
  private readonly pending = new Map<number, Pending>();

  /** `root`: sftp-server's start directory, against which relative paths resolve. */
  constructor(
    private readonly root: string,
    private readonly onChange: ChangeListener,
  ) {}

  /** Whether a reply may matter: some request waits for one. */
  get waiting(): boolean {
    return this.pending.size > 0;
  }

  /**
   * A request on its way to sftp-server, length prefix included: whole for the TAPPED_REQUESTS types, the first
   * HEAD_BYTES at most of a WRITE.
   */
  request(packet: Buffer): void {
    const parsed = this.parse(packet);
    if (!parsed) return;
    for (const p of parsed.paths) this.onChange(p, p === parsed.removes);
    if (parsed.paths.length > 0 || parsed.opens) this.expect(parsed.id, parsed);
  }

  /** The first bytes of one of sftp-server's replies (up to HEAD_BYTES). */
  reply(head: Buffer): void {
    if (head.length < 9) return;
    const id = head.readUInt32BE(5);
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    for (const path of p.paths) this.onChange(path, path === p.removes);
    if (p.opens === undefined || head[4] !== FXP.HANDLE || this.handles.size >= MAX_HANDLES) return;
    try {
      const handle = new PacketReader(head.subarray(9)).bytes().toString('latin1');
      this.handles.set(handle, { path: p.opens, reportedAt: undefined, dirty: false });
    } catch {
      // A handle longer than HEAD_BYTES holds: writes through it go unreported.
    }
  }

  private expect(id: number, p: Pending): void {
    if (this.pending.size < MAX_PENDING) this.pending.set(id, p);
  }

  /** The request's id and the host paths it changes; null when it changes nothing the watch sees, or is malformed. */
  private parse(packet: Buffer): ({ id: number } & Pending) | null {
    try {
      const r = new PacketReader(packet.subarray(4));
      const type = r.u8();
      const id = r.u32();
      const path = () => this.hostPath(r.path());
      switch (type) {
        case FXP.OPEN: {
          const p = path();
          const pflags = r.u32();
          if (!(pflags & MUTATING_OPEN)) return null;
          return { id, paths: pflags & (FXF.CREAT | FXF.TRUNC) ? [p] : [], opens: p };
        }
        case FXP.WRITE:
          return this.written(id, r.bytes().toString('latin1'));
        case FXP.CLOSE:
          return this.closed(id, r.bytes().toString('latin1'));
        case FXP.FSETSTAT: {
          const file = this.handles.get(r.bytes().toString('latin1'));
          return file ? { id, paths: [file.path] } : null;
        }
        case FXP.SETSTAT:
        case FXP.MKDIR:
          return { id, paths: [path()] };
        case FXP.REMOVE:
        case FXP.RMDIR: {
          const p = path();
          return { id, paths: [p], removes: p };
        }
        case FXP.RENAME:
          return this.renamed(id, path(), path());
        case FXP.SYMLINK:
          // OpenSSH's order: target, then the link made.
          r.path();
          return { id, paths: [path()] };
        case FXP.EXTENDED:
          return this.extended(id, r.string(), path);
        default:
          return null;
      }
    } catch {
      return null; // sftp-server answers it as malformed
    }
  }

  private extended(id: number, name: string, path: () => string): ({ id: number } & Pending) | null {
    switch (name) {
      case EXT.POSIX_RENAME:
        return this.renamed(id, path(), path());
      case EXT.HARDLINK: // the source's link count changes too
        return { id, paths: [path(), path()] };
      case EXT.LSETSTAT:
        return { id, paths: [path()] };
      default:
        return null;
    }
  }

  private renamed(id: number, from: string, to: string): { id: number } & Pending {
    return { id, paths: [from, to], removes: from };
  }

  private written(id: number, handle: string): ({ id: number } & Pending) | null {
    const file = this.handles.get(handle);
    if (!file) return null;
    file.dirty = true;
    const now = performance.now();
    if (file.reportedAt !== undefined && now - file.reportedAt < WRITE_REPORT_MS) return null;
    file.reportedAt = now;
    return { id, paths: [file.path] };
  }

  private closed(id: number, handle: string): ({ id: number } & Pending) | null {
    const file = this.handles.get(handle);
    if (!file) return null;
    this.handles.delete(handle);
    return file.dirty ? { id, paths: [file.path] } : null;
  }

  private hostPath(raw: string): string {
    return resolve(this.root, displayPath(raw));
  }
}
