// A host port below 1024 that the host user may not bind (EACCES without root or CAP_NET_BIND_SERVICE): what the
// forward's error says, and the port and `forward add` spec that tether suggests instead, for the engine, `up` and
// `doctor` alike.

const PRIVILEGED_HINT =
  'ports below 1024 need privileges on this host: forward it from a port >= 1024 with `tether forward add` ' +
  '(HOSTPORT:GUESTPORT) or a portForwards rule (hostPort)';

/** A forward's error for host addresses it could not bind for want of privileges. */
export function privilegedError(addrs: readonly string[]): string {
  return `cannot listen on ${addrs.join(', ')} (EACCES): ${PRIVILEGED_HINT}`;
}

/**
 * A host port the host user may bind to suggest for one below 1024: 10000 above it (80 → 10080, 323 → 10323), so the
 * port still shows in it, and clear of the ports dev servers take (8080 is as likely a guest's own server as 80's).
 */
export function unprivilegedPort(port: number): number {
  return 10_000 + port;
}

/**
 * The `tether forward add` spec that forwards a guest port from such a host port instead of host port `hostPort`
 * (below 1024): `10080:80`, `10323:323/udp`; with `hostIP` (a forward on one host address of its own), that address
 * first: `0.0.0.0:10443:443`.
 */
export function unprivilegedSpec(proto: string, hostPort: number, guestPort: number, hostIP = ''): string {
  return `${hostIP ? `${hostIP}:` : ''}${unprivilegedPort(hostPort)}:${guestPort}${proto === 'udp' ? '/udp' : ''}`;
}
