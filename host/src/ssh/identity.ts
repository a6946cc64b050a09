// Which private keys the SSH session offers when tether.yaml names none: like OpenSSH, the user's default key files
// in OpenSSH's order, every one that exists and loads without a passphrase (the agent runs in the background and
// cannot prompt). Security-key types (`*_sk`) need a token and are left out. Also checks a configured identity file.
// First: ssh2 must see the pooled random fill when it loads.
import './random-pool.js';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
// A default import: ssh2 is CommonJS and Node's ESM loader does not see `utils` as a named export.
import ssh2, { type AgentAuthMethod, type PublicKeyAuthMethod } from 'ssh2';
import { expandHome } from '../config/paths.js';
import type { SshConfig } from '../config/schema.js';

/** OpenSSH's default identity files (ssh_config IdentityFile), in its order. */
const DEFAULT_IDENTITY_FILES = ['id_rsa', 'id_ecdsa', 'id_ed25519'].map((f) => join('~', '.ssh', f));

interface Identity {
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
    const problem = keyProblem(key);
    if (problem) skipped.push(`${path}: ${problem.message}`);
    else identities.push({ path, key });
  }
  return { identities, skipped };
}

export type IdentityFile = { key: Buffer } | { error: string; encrypted: boolean };

/**
 * Reads and checks a configured identity file before it is handed to ssh2, which throws on a key it cannot use
 * (one with a passphrase, a public key) instead of failing the connection.
 */
export function loadIdentityFile(path: string): IdentityFile {
  let key: Buffer;
  try {
    key = readFileSync(path);
  } catch (err) {
    return { error: `cannot read identity file ${path}: ${(err as Error).message}`, encrypted: false };
  }
  const problem = keyProblem(key);
  if (!problem) return { key };
  const hint = problem.encrypted
    ? ': it has a passphrase, which the agent cannot ask for; load it into ssh-agent (ssh-add) or use a key without one'
    : `: ${problem.message}`;
  return { error: `identity file ${path} cannot be used${hint}`, encrypted: problem.encrypted };
}

function keyProblem(key: Buffer): { message: string; encrypted: boolean } | null {
  const parsed = ssh2.utils.parseKey(key);
  if (parsed instanceof Error) return { message: parsed.message, encrypted: /encrypted/i.test(parsed.message) };
  if (!parsed.isPrivateKey()) return { message: 'not a private key (a .pub file?)', encrypted: false };
  return null;
}

/** What an ssh2 connection offers to log in (spread into its ConnectConfig). */
export interface Credentials {
  privateKey?: Buffer;
  agent?: string;
  authHandler?: (AgentAuthMethod | PublicKeyAuthMethod)[];
}

/**
 * OpenSSH's choice of keys: the identity file when one is configured (the agent's keys instead when it has a
 * passphrase and an agent runs: the agent may hold it), else the agent's keys and then every usable default key
 * file. An error when nothing can be offered: that needs the user, not another attempt.
 */
export function credentials(ssh: SshConfig, home?: string): Credentials | { error: string } {
  const agent = ssh.useAgent ? process.env.SSH_AUTH_SOCK : undefined;
  if (ssh.identityFile) {
    const loaded = loadIdentityFile(expandHome(ssh.identityFile));
    if ('key' in loaded) return { privateKey: loaded.key, agent };
    if (!(loaded.encrypted && agent)) return { error: loaded.error };
  }
  const defaults = defaultIdentities(home);
  if (defaults.identities.length === 0 && !agent) {
    const why = defaults.skipped.length ? ` (${defaults.skipped.join('; ')})` : '';
    return {
      error:
        'no credentials: set ssh.identityFile (tether up -i KEY) or run an ssh-agent (SSH_AUTH_SOCK); ' +
        `no usable default key in ${DEFAULT_IDENTITY_FILES.join(', ')}${why}`,
    };
  }
  return {
    agent,
    authHandler: [
      ...(agent ? [{ type: 'agent' as const, username: ssh.user, agent }] : []),
      ...defaults.identities.map((id) => ({ type: 'publickey' as const, username: ssh.user, key: id.key })),
    ],
  };
}
