// Which port the guest's sshd serves this connection on, as the guest sees it. Through QEMU's hostfwd or any other
// port mapping the host connects to one port and sshd listens on another; only sshd knows, and it tells the session
// in $SSH_CONNECTION ("client_ip client_port server_ip server_port"). The forward engine never forwards that port.
import type { ExecResult } from './exec.js';

/** The server port of the last `$SSH_CONNECTION`-shaped line (login shells may print greetings first), or null. */
export function parseServerPort(stdout: string): number | null {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    const m = /^\S+ \d+ \S+ (\d+)$/.exec(line.trim());
    if (!m) continue;
    const port = Number(m[1]);
    return port >= 1 && port <= 65_535 ? port : null;
  }
  return null;
}

/** Asks the guest; null when the variable is missing or malformed (sshd always sets it; a wrapper might not). */
export async function guestServerPort(shell: {
  execText(command: string, timeoutMs?: number): Promise<ExecResult>;
}): Promise<number | null> {
  const r = await shell.execText('echo "$SSH_CONNECTION"', 30_000);
  return r.code === 0 ? parseServerPort(r.stdout) : null;
}
