// The TCP socket under the SSH connection, with writes coalesced per event-loop turn. ssh2 writes each SSH packet
// (at most 32 KiB of channel data) with its own socket.write, i.e. its own syscall; corking on the first write of a
// turn and uncorking on the next tick hands the kernel all of that turn's packets in one writev, which is where the
// forwarding path spent most of its time. No delay is added: the uncork runs before any I/O is polled again.
// `onTraffic` hears the size of every chunk read or written (all of the connection's bulk traffic passes here).
import net from 'node:net';

export function coalescingSocket(host: string, port: number, onTraffic?: (bytes: number) => void): net.Socket {
  const sock = net.connect({ host, port });
  if (onTraffic) sock.on('data', (chunk: Buffer) => onTraffic(chunk.length));
  // Without TCP_NODELAY every small SFTP or channel round trip waits for a delayed ACK (~40 ms each).
  sock.setNoDelay(true);
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
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
