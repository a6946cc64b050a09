// Which private keys the SSH session offers when tether.yaml names none: like OpenSSH, the user's default key files
// in OpenSSH's order, every one that exists and loads without a passphrase (the agent runs in the background and
// cannot prompt). Security-key types (`*_sk`) need a token and are left out.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
// A default import: ssh2 is CommonJS and Node's ESM loader does not see `utils` as a named export.
import ssh2 from 'ssh2';

/** OpenSSH's default identity files (ssh_config IdentityFile), in its order. */
export const DEFAULT_IDENTITY_FILES = ['id_rsa', 'id_ecdsa', 'id_ed25519'].map((f) => join('~', '.ssh', f));

export interface Identity {
  path: string;
  key: Buffer;
}

/** The default key files that exist and hold a private key usable without a passphrase; `skipped` says why not. */
export function defaultIdentities(home = homedir()): { identities: Identity[]; skipped: string[] } {
  const identities: Identity[] = [];
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
    if (parsed instanceof Error) skipped.push(`${path}: ${parsed.message}`);
    else if (!parsed.isPrivateKey()) skipped.push(`${path}: not a private key`);
    else identities.push({ path, key });
  }
  return { identities, skipped };
}
