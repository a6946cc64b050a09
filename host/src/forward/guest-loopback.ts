// Which guest loopback an explicit forward to the guest's `localhost` connects to. `forward add 9097:8087` and static
// rules name 127.0.0.1, but a dev server bound to `localhost` often listens on ::1 only: the forward follows the
// port's listeners there, so connections are not refused at 127.0.0.1 first and `forward ls` shows the address that
// answers. Pure: the engine asks again whenever a listener of the port comes or goes.
import { unmapIPv4 } from './rules.js';

/** The guest addresses whose listeners a forward to the guest's localhost can reach. */
const GUEST_LOOPBACK_OR_ANY = ['127.0.0.1', '::1', '0.0.0.0', '::', '::ffff:127.0.0.1'];

/**
 * Where a forward asked to go to guest `askedIP` (127.0.0.1 or ::1) connects: the other loopback when the port's only
 * listener is there, else `askedIP`. `listenerAt(ip)` is the address of the port's listener bound to `ip`, if any.
 */
export function loopbackTarget(askedIP: string, listenerAt: (ip: string) => string | undefined): string {
  const at = new Set<string>();
  for (const ip of GUEST_LOOPBACK_OR_ANY) {
    const l = listenerAt(ip);
    if (l !== undefined) at.add(unmapIPv4(l));
  }
  const other = unmapIPv4(askedIP) === '::1' ? '127.0.0.1' : '::1';
  return at.size === 1 && at.has(other) ? other : askedIP;
}
