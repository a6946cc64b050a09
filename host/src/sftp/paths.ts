// Confinement of client paths to the export root. Client paths are in the host's namespace (the guest mounts
// `:<root>`), so absolute paths must lie under the root and relative ones are taken from the root. Every path is
// normalised lexically, its parent is realpath'd and checked, and — for operations that follow links — every
// symlink in the final component is resolved by hand (dangling ones too, so O_CREAT through a link cannot create a
// file outside). What is returned is a host path whose parents are real directories inside the root; callers open
// it with O_NOFOLLOW so a link swapped in after resolution fails instead of escaping.
//
// The root is resolved again for every request, as the kernel does for sftp-server (sshfs names the export by its
// configured path each time): a `location` that is a symlink, repointed with `ln -sfn`, serves its new target from
// the next request on, and confines to that target alone.
//
// The lookups are synchronous (see server.ts): microseconds on a local disk, and they sit on every path request.
// realpath costs one readlink per component, so directories realpath resolved (the root and parents) are
// remembered for a moment (ParentCache below). A remembered one is used only after one lstat shows the same
// directory (device and inode) still at its real path and, for one reached through a symlink, one stat shows the
// path still leads to it: a directory or ancestor replaced by a link out of the export, renamed or removed, or a
// link repointed (by the guest or by a host process) makes a check find something else, and the lookup goes back
// to realpath and the confinement check. For a path free of symlinks the path handed out is the lexical one, so the
// kernel still resolves it afresh. What the checks cannot see is a directory moved out of the export by a host
// process and linked back in under its old name; the TTL bounds that window to PARENT_TTL_MS. The server also
// drops the cache whenever the guest renames or removes anything.
//
// Paths are byte strings: one character per byte of the name (latin1), since a host file name is any bytes but '/'
// and NUL, not necessarily UTF-8 (a file from an old archive, say). Decoding them as UTF-8 would hand the guest
// names the host cannot find again. They meet the filesystem only as Buffers (fsPath) and a person only through
// displayPath.
//
// Policy: creating a symlink with any target is allowed (the guest kernel resolves links on the mount in the
// guest's own namespace), but the server never follows a link that leads outside the root.

import { lstatSync, readlinkSync, realpathSync, type Stats, statSync } from 'node:fs';
import { posix } from 'node:path';
import { FX } from './constants.js';
import { SftpStatusError, toStatus } from './errors.js';

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
  /** What realpath gave. */
  real: string;
  dev: number;
  ino: number;
  expires: number;
}

/** Directories realpath resolved, with the identity that proves the entry still holds. */
class ParentCache {
  private readonly entries = new Map<string, CachedParent>();

  /** The real path of `dir` (a lexically normalised absolute host path), or throws like realpath. */
  realpath(dir: string): string {
    const hit = this.entries.get(dir);
    const now = performance.now();
    if (hit) {
      if (hit.expires > now && stillLeadsTo(dir, hit)) return hit.real;
      this.entries.delete(dir);
    }
    const real = realpathSync.native(fsPath(dir), { encoding: 'latin1' });
    const st = lstatSync(fsPath(real), { throwIfNoEntry: false });
    if (st?.isDirectory()) {
      if (this.entries.size >= MAX_CACHED_PARENTS) this.entries.clear();
      this.entries.set(dir, { real, dev: st.dev, ino: st.ino, expires: now + PARENT_TTL_MS });
    }
    return real;
  }

  clear(): void {
    this.entries.clear();
  }
}

/**
 * Whether the directory realpath found for `dir` is still at its real path (lstat: not a link swapped in there), and
 * `dir` still leads to it (stat, through its links: not repointed). Any error means no: realpath then says why.
 */
function stillLeadsTo(dir: string, hit: CachedParent): boolean {
  const same = (st: Stats | undefined) => st !== undefined && st.ino === hit.ino && st.dev === hit.dev;
  try {
    const atReal = lstatSync(fsPath(hit.real), { throwIfNoEntry: false });
    if (!atReal?.isDirectory() || !same(atReal)) return false;
    return hit.real === dir || same(statSync(fsPath(dir), { throwIfNoEntry: false }));
  } catch {
    return false;
  }
}

function within(p: string, root: string): boolean {
  return root === '/' || p === root || p.startsWith(`${root}/`);
}

function stripTrailingSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

/** Why the export's directory cannot be served, naming it (Node's bare "ENOENT: …, realpath '…'" would not say). */
function rootUnusable(root: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'does not exist' : `cannot be opened (${code ?? (err as Error).message})`;
  return `host directory ${root} ${why}`;
}

/** A host path resolved for a request, with the real root it was confined to. */
export interface Resolved {
  path: string;
  /** Its lstat; undefined when nothing is there or it was not asked for. */
  stats: Stats | undefined;
  /** The root's real path as this request found it: the symlinked root's target of the moment. */
  root: string;
}

export class Confinement {
  /** The root as the client knows it (the configured path, normalised). */
  readonly clientRoot: string;
  private readonly parents = new ParentCache();

  /** Throws if `root` (a path as configured, UTF-8) does not exist: an export without a directory is a configuration error. */
  constructor(root: string) {
    this.clientRoot = Buffer.from(stripTrailingSlash(posix.normalize(posix.resolve(root))), 'utf8').toString('latin1');
    try {
      this.parents.realpath(this.clientRoot);
    } catch (err) {
      throw new Error(rootUnusable(root, err));
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
  resolveAndStat(clientPath: string, follow: boolean, wantStats = true): Resolved {
    // One root for the whole lookup: a repoint in the middle must not confine a link's target to another directory
    // than the one its parent was checked against.
    const root = this.realRoot();
    let p = this.toHost(clientPath, clientPath, root);
    for (let hops = 0; ; hops++) {
      if (p === root)
        return { path: p, stats: wantStats ? lstatSync(fsPath(p), { throwIfNoEntry: false }) : undefined, root };
      const slash = p.lastIndexOf('/');
      const dir = slash === 0 ? '/' : p.slice(0, slash);
      const parent = dir === root ? root : this.parents.realpath(dir);
      if (!within(parent, root)) throw this.denied(clientPath);
      const candidate = parent === '/' ? p.slice(slash) : parent + p.slice(slash);
      if (!follow && !wantStats) return { path: candidate, stats: undefined, root };
      const stats = lstatSync(fsPath(candidate), { throwIfNoEntry: false });
      if (!follow || !stats?.isSymbolicLink()) return { path: candidate, stats, root };
      if (hops >= MAX_SYMLINK_HOPS) {
        throw new SftpStatusError(FX.FAILURE, `too many levels of symbolic links resolving ${displayPath(clientPath)}`);
      }
      const target = readlinkSync(fsPath(candidate), { encoding: 'latin1' });
      p = this.toHost(posix.isAbsolute(target) ? target : posix.join(parent, target), clientPath, root);
    }
  }

  /** REALPATH: the name under which the client knows what `clientPath` resolves to (links followed). */
  realpath(clientPath: string): string {
    const { path, root } = this.resolveAndStat(clientPath, true, false);
    const rest = path.slice(root.length);
    if (this.clientRoot === '/') return rest.startsWith('/') ? rest : `/${rest}`;
    return this.clientRoot + (root === '/' && rest !== '' ? `/${rest}` : rest);
  }

  /** Forgets cached parent directories; called after the guest renames or removes anything. */
  forgetParents(): void {
    this.parents.clear();
  }

  /** The root's real path now; a root whose link now dangles fails the request as its directory would. */
  private realRoot(): string {
    try {
      return this.parents.realpath(this.clientRoot);
    } catch (err) {
      throw new SftpStatusError(toStatus(err).status, rootUnusable(displayPath(this.clientRoot), err));
    }
  }

  /** Lexical step: absolute, normalised, under the real root (either spelling of the root is accepted). */
  private toHost(path: string, asked: string, root: string): string {
    if (path.includes('\0')) throw new SftpStatusError(FX.BAD_MESSAGE, 'path contains a NUL byte');
    const abs = stripTrailingSlash(
      posix.normalize(posix.isAbsolute(path) ? path : posix.join(this.clientRoot, path === '' ? '.' : path)),
    );
    if (within(abs, this.clientRoot)) {
      const rest = this.clientRoot === '/' ? abs : abs.slice(this.clientRoot.length);
      return root === '/' ? rest || '/' : stripTrailingSlash(root + rest);
    }
    if (within(abs, root)) return abs;
    throw this.denied(asked);
  }

  private denied(asked: string): SftpStatusError {
    return new SftpStatusError(
      FX.PERMISSION_DENIED,
      `${displayPath(asked)}: outside the export ${displayPath(this.clientRoot)}`,
    );
  }
}
