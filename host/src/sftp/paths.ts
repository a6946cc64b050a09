// Confinement of client paths to the export root. Client paths are in the host's namespace (the guest mounts
// `:<root>`), so absolute paths must lie under the root and relative ones are taken from the root. Every path is
// normalised lexically, its parent is realpath'd and checked, and — for operations that follow links — every
// symlink in the final component is resolved by hand (dangling ones too, so O_CREAT through a link cannot create a
// file outside). What is returned is a host path whose parents are real directories inside the root; callers open
// it with O_NOFOLLOW so a link swapped in after resolution fails instead of escaping.
//
// The lookups are synchronous (see server.ts): microseconds on a local disk, and they sit on every path request.
//
// Policy: creating a symlink with any target is allowed (the guest kernel resolves links on the mount in the
// guest's own namespace), but the server never follows a link that leads outside the root.

import { lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { posix } from 'node:path';
import { FX } from './constants.js';
import { SftpStatusError } from './errors.js';

const MAX_SYMLINK_HOPS = 40;

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

  /** Throws if `root` does not exist: an export without a directory is a configuration error. */
  constructor(root: string) {
    this.clientRoot = stripTrailingSlash(posix.normalize(posix.resolve(root)));
    this.realRoot = realpathSync.native(this.clientRoot);
  }

  /**
   * Maps a client path to a confined host path. `follow` resolves symlinks in the final component (STAT, OPEN,
   * SETSTAT, OPENDIR, REALPATH); without it the final component is the link itself (LSTAT, REMOVE, RENAME, ...).
   */
  resolve(clientPath: string, follow: boolean): string {
    let p = this.toHost(clientPath, clientPath);
    for (let hops = 0; ; hops++) {
      if (p === this.realRoot) return p;
      const parent = realpathSync.native(posix.dirname(p));
      if (!within(parent, this.realRoot)) throw this.denied(clientPath);
      const candidate = posix.join(parent, posix.basename(p));
      if (!follow) return candidate;
      const st = lstatSync(candidate, { throwIfNoEntry: false });
      if (!st?.isSymbolicLink()) return candidate;
      if (hops >= MAX_SYMLINK_HOPS) {
        throw new SftpStatusError(FX.FAILURE, `too many levels of symbolic links resolving ${clientPath}`);
      }
      const target = readlinkSync(candidate);
      p = this.toHost(posix.isAbsolute(target) ? target : posix.join(parent, target), clientPath);
    }
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
    return new SftpStatusError(FX.PERMISSION_DENIED, `${asked}: outside the export ${this.clientRoot}`);
  }
}
