// Why a connection the server took ended before the server said a word. ssh2 words it "Connection lost before
// handshake" (a close) or "read ECONNRESET" (a reset, as QEMU's hostfwd answers while the guest's sshd is down), which
// hides that no SSH banner ever came. The agent's reconnect reasons and doctor's reachability check both word it here,
// so they agree. Owns only the socket's first-byte watch and the wording; it neither connects nor retries.
import type { Socket } from 'node:net';

export class BannerWatch {
  /** When the TCP connection was made; null before it. */
  private connectedAt: number | null = null;
  /** The server sent a byte: whatever fails later is not about a missing banner. */
  private spoke = false;

  constructor(
    sock: Socket,
    private readonly target: string,
    private readonly readyTimeoutMs: number,
  ) {
    sock.once('connect', () => {
      this.connectedAt = performance.now();
    });
    sock.once('data', () => {
      this.spoke = true;
    });
  }

  /** The reason for `err` when the server took the connection and ended it without a byte; null otherwise. */
  explain(err: NodeJS.ErrnoException): string | null {
    if (this.spoke) return null;
    // A reset (not a refusal) means something accepted the connection, even when it came before Node saw it connect.
    const reset = err.code === 'ECONNRESET';
    if (!reset && (this.connectedAt === null || !/handshake/i.test(err.message))) return null;
    const waited = this.connectedAt === null ? 0 : (performance.now() - this.connectedAt) / 1000;
    return !reset && waited >= this.readyTimeoutMs / 1000 - 0.5
      ? `${this.target} took the connection but sent no SSH banner in ${Math.round(waited)} s: not an SSH server, ` +
          'or an sshd that hangs (a VM still booting?)'
      : `${this.target} closed the connection without an SSH banner: not an SSH server, or an sshd turning ` +
          'connections away (MaxStartups, a firewall, a VM still booting?)';
  }
}
