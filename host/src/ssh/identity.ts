// Which private key the SSH session offers when tether.yaml names none: like OpenSSH, the user's default key files,
// first one that exists and loads without a passphrase (the agent runs in the background and cannot prompt).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
// A default import: ssh2 is CommonJS and Node's ESM loader does not see `utils` as a named export.
import ssh2 from 'ssh2';

/** OpenSSH's default identity files, in its order. */
export const DEFAULT_IDENTITY_FILES = ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join('~', '.ssh', f));

export interface Identity {
  path: string;
  key: Buffer;
}

/** The first default key file that exists and parses without a passphrase; `skipped` says why others were passed. */
export function defaultIdentity(home = homedir()): { identity: Identity | null; skipped: string[] } {
  const skipped: string[] = [];
  for (const name of DEFAULT_IDENTITY_FILES) {
    const path = join(home, name.slice(2));
    let key: Buffer;
    try {
      key = readFileSync(path);
    } catch {
      continue; // absent: not worth a word
    }
    const parsed = ssh2.utils.parseKey(key);
    if (parsed instanceof Error) {
      skipped.push(`${path}: ${parsed.message}`);
      continue;
    }
    return { identity: { path, key }, skipped };
  }
  return { identity: null, skipped };
}
