// The TCP socket under the SSH connection, with writes coalesced per event-loop turn. ssh2 writes each SSH packet
// (at most 32 KiB of channel data) with its own socket.write, i.e. its own syscall; corking on the first write of a
// turn and uncorking on the next tick hands the kernel all of that turn's packets in one writev, which is where the
// forwarding path spent most of its time. No delay is added: the uncork runs before any I/O is polled again.
// `flushWrites` sends what is corked at once, for the packets a forwarded connection waits on (see its comment).
// `onTraffic` hears the size of every chunk read or written (all of the connection's bulk traffic passes here).
import net from 'node:net';

/** Each coalescing socket's flush (uncork now, and cork afresh on the next write). */
const flushes = new WeakMap<object, () => void>();

export function coalescingSocket(host: string, port: number, onTraffic?: (bytes: number) => void): net.Socket {
  const sock = net.connect({ host, port });
  if (onTraffic) sock.on('data', (chunk: Buffer) => onTraffic(chunk.length));
  // Without TCP_NODELAY every small SFTP or channel round trip waits for a delayed ACK (~40 ms each).
  sock.setNoDelay(true);
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    if (!corked) return;
    corked = false;
    sock.uncork();
  };
  flushes.set(sock, uncork);
  sock.write = ((...args: unknown[]) => {
    onTraffic?.((args[0] as { length: number }).length);
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  }) as typeof sock.write;
  return sock;
}

/**
 * Writes out what a coalescing socket holds now instead of at the end of the turn: for a packet a forwarded
 * connection waits on when the turn has more work after it (a channel open, then building the client's Socket; a
 * connection's first bytes, then the rest of the confirmation's handling). Measured on the echo benchmark, each
 * such packet going out first took 10-25 µs off its connection. Other sockets: no-op.
 */
export function flushWrites(sock: object | undefined): void {
  if (sock) flushes.get(sock)?.();
}
