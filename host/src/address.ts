// How the host agent writes a socket address in messages, logs and views (`127.0.0.1:8080`, `[::1]:8080`), which
// host names are this host's loopback, and the one host port no forward may take: the VM's SSH port on loopback.

export function formatAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The port of an address formatAddr wrote (`[::1]:8080` → 8080); null for anything else (a socket path). */
export function portOfAddr(addr: string | undefined): number | null {
  const m = /:(\d+)$/.exec(addr ?? '');
  return m ? Number(m[1]) : null;
}

/** The IP of an address formatAddr wrote, without brackets (`[::1]:8080` → `::1`). */
export function ipOfAddr(addr: string): string {
  return addr.slice(0, addr.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}

/** `localhost`, 127.0.0.0/8 or ::1 (bracketed or not): an SSH host name that is this host (QEMU's hostfwd). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Whether a forward on these host addresses takes the loopback port this host's SSH connection to the VM goes
 * through (`hostSshPort`: ssh.port when ssh.host is a loopback address, else undefined): a guest service there would
 * answer `localhost:PORT` on ::1 (tried first on macOS) in place of the VM's sshd, and on 127.0.0.1 once it stops.
 */
export function takesSshPort(
  proto: 'tcp' | 'udp',
  hostIPs: readonly string[],
  hostPort: number,
  hostSshPort: number | undefined,
): boolean {
  const loopbackOrAny = (ip: string) => isLoopbackHost(ip.replace(/^::ffff:/i, '')) || ip === '0.0.0.0' || ip === '::';
  return proto === 'tcp' && hostPort === hostSshPort && hostIPs.some(loopbackOrAny);
}

/** Why no forward may take that port. */
export function sshPortTaken(hostPort: number): string {
  return `host port ${hostPort} is where this host reaches the VM's sshd (ssh.port)`;
}
