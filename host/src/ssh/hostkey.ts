// Host key trust on first use: the guest's SSH host key is pinned in the instance directory the first time it is
// seen; afterwards only that key is accepted. Owns the pin file format and the fingerprint; knows nothing of ssh2.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { makeDirs } from '../make-dirs.js';

export interface HostKey {
  /** Key type, e.g. `ssh-ed25519`. */
  algorithm: string;
  /** The raw public key blob, base64. */
  base64: string;
  /** OpenSSH style, e.g. `SHA256:Xb6…`. */
  fingerprint: string;
}

type HostKeyCheck =
  | { result: 'pinned'; key: HostKey } // first use: written to the pin file
  | { result: 'match'; key: HostKey }
  | { result: 'mismatch'; key: HostKey; pinned: HostKey; error: HostKeyMismatchError };

class HostKeyMismatchError extends Error {
  override name = 'HostKeyMismatchError';
  constructor(
    readonly path: string,
    readonly pinned: HostKey,
    readonly offered: HostKey,
  ) {
    super(
      `host key changed: pinned ${pinned.algorithm} ${pinned.fingerprint}, server offered ${offered.algorithm} ` +
        `${offered.fingerprint}; refusing to connect (delete ${path} to accept the new key deliberately; a running agent then connects again by itself)`,
    );
  }
}

/** Parses an SSH public key blob (`string algorithm, ...`) into its type and fingerprint. */
export function describeKey(blob: Buffer): HostKey {
  let algorithm = 'unknown';
  if (blob.length >= 4) {
    const len = blob.readUInt32BE(0);
    if (len > 0 && len <= 64 && 4 + len <= blob.length) algorithm = blob.subarray(4, 4 + len).toString('latin1');
  }
  const fingerprint = `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
  return { algorithm, base64: blob.toString('base64'), fingerprint };
}

/** Pin file: one line `<algorithm> <base64> <fingerprint>`. Returns null when absent or unreadable as a key. */
export function readPinned(path: string): HostKey | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read pinned host key ${path}: ${(err as Error).message}`);
  }
  const [algorithm, base64] = text.trim().split(/\s+/);
  if (!algorithm || !base64) throw new Error(`pinned host key ${path} is malformed; delete it to pin the key again`);
  return describeKey(Buffer.from(base64, 'base64'));
}

function writePinned(path: string, key: HostKey): void {
  makeDirs(dirname(path), 0o700);
  writeFileSync(path, `${key.algorithm} ${key.base64} ${key.fingerprint}\n`, { mode: 0o600 });
}

/** Checks an offered key against the pin at `path`, pinning it on first use. */
export function checkHostKey(path: string, blob: Buffer): HostKeyCheck {
  const key = describeKey(blob);
  const pinned = readPinned(path);
  if (!pinned) {
    writePinned(path, key);
    return { result: 'pinned', key };
  }
  if (pinned.base64 === key.base64) return { result: 'match', key };
  return { result: 'mismatch', key, pinned, error: new HostKeyMismatchError(path, pinned, key) };
}
