// Which loopback addresses this host has, for forwards that name no host address. Both 127.0.0.1 and ::1 by default;
// a host with IPv6 turned off (a kernel booted with ipv6.disable=1, a sysctl, many containers) has no ::1, and a
// listener there would fail for every forward, each listing an address it does not serve with an error it cannot
// fix. Read once, from the interface list: no socket is opened.
import { networkInterfaces } from 'node:os';
import { BOTH_LOOPBACKS } from './rules.js';

/** The host's loopback addresses among 127.0.0.1 and ::1; both when the interface list cannot be read or has neither. */
export function hostLoopbacks(interfaces: () => ReturnType<typeof networkInterfaces> = networkInterfaces): string[] {
  let present: Set<string | undefined>;
  try {
    present = new Set(
      Object.values(interfaces())
        .flat()
        .map((a) => a?.address),
    );
  } catch {
    return [...BOTH_LOOPBACKS];
  }
  const have = BOTH_LOOPBACKS.filter((ip) => present.has(ip));
  return have.length > 0 ? have : [...BOTH_LOOPBACKS];
}
