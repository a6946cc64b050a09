// Validation of the relative paths in host file events. Owns the syntactic rules only (no filesystem access): a path
// is relative, normalised, free of `..` segments and NUL bytes. Symlink confinement happens where paths are applied.
import { posix } from 'node:path';

export class InvalidFsPathError extends Error {
  override name = 'InvalidFsPathError';
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`invalid fs event path ${JSON.stringify(path.slice(0, 200))}: ${reason}`);
  }
}

/** The normalised form of a relative event path; throws InvalidFsPathError when it could leave its root. */
export function checkRelativePath(path: string): string {
  if (path.length === 0) throw new InvalidFsPathError(path, 'empty');
  if (path.includes('\0')) throw new InvalidFsPathError(path, 'contains a NUL byte');
  if (path.startsWith('/')) throw new InvalidFsPathError(path, 'absolute');
  if (path.split('/').includes('..')) throw new InvalidFsPathError(path, 'contains a `..` segment');
  const normal = posix.normalize(path).replace(/\/+$/, '');
  if (normal === '.' || normal === '') throw new InvalidFsPathError(path, 'names the root itself');
  return normal;
}

/** An absolute root: `/`-rooted and already normal (what the host mounted, not something to interpret). */
export function checkRoot(root: string): string {
  if (
    !root.startsWith('/') ||
    root.includes('\0') ||
    posix.normalize(root) !== root ||
    root.split('/').includes('..')
  ) {
    throw new InvalidFsPathError(root, 'root must be an absolute, normalised path');
  }
  return root.length > 1 ? root.replace(/\/+$/, '') : root;
}
