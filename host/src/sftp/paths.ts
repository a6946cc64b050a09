// Confinement of client paths to the export root. Client paths are in the host's namespace (the guest mounts
// `:<root>`), so absolute paths must lie under the root and relative ones are taken from the root. Every path is
// normalised lexically, its parent is realpath'd and checked, and — for operations that follow links — every
// symlink in the final component is resolved by hand (dangling ones too, so O_CREAT through a link cannot create a
// file outside). What is returned is a host path whose parents are real directories inside the root; callers open
// it with O_NOFOLLOW so a link swapped in after resolution fails instead of escaping.
//
// The lookups are synchronous (see server.ts): microseconds on a local disk, and they sit on every path request.
// realpath costs one readlink per component, so parents that realpath found free of symlinks are remembered for
// a moment (ParentCache below). A remembered parent is used only after one lstat shows the same directory (device
// and inode) still at that path: a directory or ancestor replaced by a link out of the export, renamed or removed
// (by the guest or by a host process) makes that lstat find something else, and the lookup goes back to realpath
// and the confinement check. Since the path handed out is the lexical one, the kernel still resolves it afresh.
// What an lstat cannot see is a directory moved out of the export by a host process and linked back in under its
// old name; the TTL bounds that window to PARENT_TTL_MS. The server also drops the cache whenever the guest renames
// or removes anything.
//
// Paths are byte strings: one character per byte of the name (latin1), since a host file name is any bytes but '/'
// and NUL, not necessarily UTF-8 (a file from an old archive, say). Decoding them as UTF-8 would hand the guest
// names the host cannot find again. They meet the filesystem only as Buffers (fsPath) and a person only through
// displayPath.
//
// Policy: creating a symlink with any target is allowed (the guest kernel resolves links on the mount in the
// guest's own namespace), but the server never follows a link that leads outside the root.

import { lstatSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import { posix } from 'node:path';
import { FX } from './constants.js';
import { SftpStatusError } from './errors.js';

/** A byte-string path as the Buffer that fs calls take. */
export function fsPath(p: string): Buffer {
  return Buffer.from(p, 'latin1');
}

/** A byte-string path for log lines and status messages (names that are not UTF-8 show replacement characters). */
export function displayPath(p: string): string {
  return Buffer.from(p, 'latin1').toString('utf8');
}

const MAX_SYMLINK_HOPS = 40;
/** Parent directories remembered; the whole cache is dropped when it fills (a walk refills it in microseconds). */
const MAX_CACHED_PARENTS = 8192;
/** How long a remembered parent is trusted (with its lstat check) before realpath walks it again. */
const PARENT_TTL_MS = 1000;

interface CachedParent {
  dev: number;
  ino: number;
  expires: number;
}

/** Directories whose path realpath found free of symlinks, with the identity that proves the entry still holds. */
class ParentCache {
  private readonly entries = new Map<string, CachedParent>();

  /** The real path of `dir` (a lexically normalised absolute host path), or throws like realpath. */
  realpath(dir: string): string {
    const hit = this.entries.get(dir);
    const now = performance.now();
    if (hit) {
      const st = hit.expires > now ? lstatSync(fsPath(dir), { throwIfNoEntry: false }) : undefined;
      if (st?.isDirectory() && st.ino === hit.ino && st.dev === hit.dev) return dir;
      this.entries.delete(dir);
    }
    const real = realpathSync.native(fsPath(dir), { encoding: 'latin1' });
    if (real !== dir) return real;
    const st = lstatSync(fsPath(real), { throwIfNoEntry: false });
    if (st?.isDirectory()) {
      if (this.entries.size >= MAX_CACHED_PARENTS) this.entries.clear();
      this.entries.set(dir, { dev: st.dev, ino: st.ino, expires: now + PARENT_TTL_MS });
    }
    return real;
  }

  clear(): void {
    this.entries.clear();
  }
}

function within(p: string, root: string): boolean {
  return root === '/' || p === root || p.startsWith(`${root}/`);
}

function stripTrailingSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

export class Confinement {
  /** The root as the client knows it (the configured path, normalised). */
  readonly clientRoot: string;
  /** The root with symlinks resolved; every host path handed out lies under it. */
  readonly realRoot: string;
  private readonly parents = new ParentCache();

  /** Throws if `root` (a path as configured, UTF-8) does not exist: an export without a directory is a configuration error. */
  constructor(root: string) {
    this.clientRoot = Buffer.from(stripTrailingSlash(posix.normalize(posix.resolve(root))), 'utf8').toString('latin1');
    try {
      this.realRoot = realpathSync.native(fsPath(this.clientRoot), { encoding: 'latin1' });
    } catch (err) {
      // Node's "ENOENT: no such file or directory, realpath '…'" would reach `mount ls` as it is.
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist' : `cannot be opened (${code ?? (err as Error).message})`;
      throw new Error(`host directory ${root} ${why}`);
    }
  }

  /**
   * Maps a client path to a confined host path (both byte strings). `follow` resolves symlinks in the final component (STAT, OPEN,
   * SETSTAT, OPENDIR, REALPATH); without it the final component is the link itself (LSTAT, REMOVE, RENAME, ...).
   */
  resolve(clientPath: string, follow: boolean): string {
    return this.resolveAndStat(clientPath, follow, false).path;
  }

  /**
   * resolve() plus the lstat of the result (undefined when nothing is there), which following links needs anyway:
   * STAT and LSTAT answer from it without a second lookup.
   */
  resolveAndStat(clientPath: string, follow: boolean, wantStats = true): { path: string; stats: Stats | undefined } {
    let p = this.toHost(clientPath, clientPath);
    for (let hops = 0; ; hops++) {
      if (p === this.realRoot)
        return { path: p, stats: wantStats ? lstatSync(fsPath(p), { throwIfNoEntry: false }) : undefined };
      const slash = p.lastIndexOf('/');
      const parent = this.parents.realpath(slash === 0 ? '/' : p.slice(0, slash));
      if (!within(parent, this.realRoot)) throw this.denied(clientPath);
      const candidate = parent === '/' ? p.slice(slash) : parent + p.slice(slash);
      if (!follow && !wantStats) return { path: candidate, stats: undefined };
      const stats = lstatSync(fsPath(candidate), { throwIfNoEntry: false });
      if (!follow || !stats?.isSymbolicLink()) return { path: candidate, stats };
      if (hops >= MAX_SYMLINK_HOPS) {
        throw new SftpStatusError(FX.FAILURE, `too many levels of symbolic links resolving ${displayPath(clientPath)}`);
      }
      const target = readlinkSync(fsPath(candidate), { encoding: 'latin1' });
      p = this.toHost(posix.isAbsolute(target) ? target : posix.join(parent, target), clientPath);
    }
  }

  /** Forgets cached parent directories; called after the guest renames or removes anything. */
  forgetParents(): void {
    this.parents.clear();
  }

  /** The name under which the client knows a host path inside the root. */
  toClient(hostPath: string): string {
    const rest = hostPath.slice(this.realRoot.length);
    if (this.clientRoot === '/') return rest.startsWith('/') ? rest : `/${rest}`;
    return this.clientRoot + (this.realRoot === '/' && rest !== '' ? `/${rest}` : rest);
  }

  /** Lexical step: absolute, normalised, under the real root (either spelling of the root is accepted). */
  private toHost(path: string, asked: string): string {
    if (path.includes('\0')) throw new SftpStatusError(FX.BAD_MESSAGE, 'path contains a NUL byte');
    const abs = stripTrailingSlash(
      posix.normalize(posix.isAbsolute(path) ? path : posix.join(this.clientRoot, path === '' ? '.' : path)),
    );
    if (within(abs, this.clientRoot)) {
      const rest = this.clientRoot === '/' ? abs : abs.slice(this.clientRoot.length);
      return this.realRoot === '/' ? rest || '/' : stripTrailingSlash(this.realRoot + rest);
    }
    if (within(abs, this.realRoot)) return abs;
    throw this.denied(asked);
  }

  private denied(asked: string): SftpStatusError {
    return new SftpStatusError(
      FX.PERMISSION_DENIED,
      `${displayPath(asked)}: outside the export ${displayPath(this.clientRoot)}`,
    );
  }
}
