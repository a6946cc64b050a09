// How the host agent writes a socket address in messages, logs and views (`127.0.0.1:8080`, `[::1]:8080`), and which
// host names are this host's loopback.

export function formatAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** `localhost`, 127.0.0.0/8 or ::1 (bracketed or not): an SSH host name that is this host (QEMU's hostfwd). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
