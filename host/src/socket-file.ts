// Unix socket files the host agent listens on (the control API's ha.sock, unix forwards' host sockets): claiming a
// path (a stale socket is unlinked; one a live process answers on, or any other file, is refused) and restricting
// it to the owner. Knows nothing of what is served on them.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';

/** Someone answers on the socket: it is theirs. `code` is EADDRINUSE, as a bind to a busy address reports it. */
export class SocketBusyError extends Error {
  readonly code = 'EADDRINUSE';

  constructor(readonly path: string) {
    super(`another process is already serving ${path}`);
    this.name = 'SocketBusyError';
  }
}

/** The longest unix socket path the kernel takes: sun_path less its NUL (108 bytes on Linux, 104 on macOS, BSDs). */
const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;

/**
 * Why `path` cannot be a unix socket here (too long: Node would bind a truncated path somewhere else), or null.
 * Callers add what to change.
 */
export function socketPathProblem(path: string): string | null {
  const bytes = Buffer.byteLength(path);
  return bytes > MAX_SOCKET_PATH
    ? `${path} is ${bytes} bytes long, and a unix socket path may have at most ${MAX_SOCKET_PATH} here`
    : null;
}

/** Whether something accepts connections on the unix socket at `path` (false for a stale or missing socket). */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Makes `path` free for listening: unlinks a stale socket, throws SocketBusyError when someone answers on it. */
export async function claimSocketPath(path: string): Promise<void> {
  const tooLong = socketPathProblem(path);
  if (tooLong) throw new Error(tooLong);
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; remove it by hand if it is not needed`);
  if (await socketAnswers(path)) throw new SocketBusyError(path);
  unlinkSync(path);
}

/** Owner-only access; the directory (0700) already keeps others out, this covers a socket moved elsewhere. */
export function restrictSocket(path: string): void {
  chmodSync(path, 0o600);
}
