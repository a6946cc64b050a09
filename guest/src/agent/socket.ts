// The agent's unix socket on disk: its directory, a stale file left by a previous run, and permissions that let only
// root and the socket owner connect. Owns these filesystem steps; knows nothing of the protocol.
import { chmodSync, chownSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import type { Owner } from './owner.js';

export const DEFAULT_SOCKET_PATH = '/run/tether/agent.sock';

/** Creates the socket's directory when missing: 0711 (others may traverse, but the socket itself is 0600). */
export function ensureSocketDir(socketPath: string): void {
  const dir = dirname(socketPath);
  const created = mkdirSync(dir, { recursive: true, mode: 0o711 });
  if (created !== undefined) chmodSync(dir, 0o711); // mkdir's mode is filtered by the umask
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** Removes a socket file left by a previous agent; refuses a live one, and anything that is not a socket. */
export async function removeStaleSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${socketPath} exists and is not a socket; not removing it`);
  if (await answers(socketPath)) throw new Error(`${socketPath}: another agent is already serving on this socket`);
  unlinkSync(socketPath);
}

/** 0600, owned by the socket owner (when given), so that only root and that user can connect. */
export function restrictSocket(socketPath: string, owner: Owner | null): void {
  chmodSync(socketPath, 0o600);
  if (owner) chownSync(socketPath, owner.uid, owner.gid);
}
