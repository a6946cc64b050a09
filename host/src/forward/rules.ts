// Which host address a guest listener is forwarded to, with Lima's rule semantics, and which guest address a host
// connection for it is sent to. Pure: no I/O, no state.
// Order: the built-in ignore of the guest's sshd port, then the configured rules (first match wins), then the
// default rule (guest loopback or wildcard → host 127.0.0.1 and ::1, same port). Non-loopback guest addresses are
// forwarded only when a rule says so.
import { sshPortTaken, takesSshPort } from '../address.js';
import { isSocketRule, type PortForward, type PortRule } from '../config/schema.js';

export interface GuestListenerAddr {
  proto: 'tcp' | 'udp';
  ip: string;
  port: number;
}

export type RuleDecision =
  | { action: 'forward'; hostIPs: string[]; hostPort: number }
  | { action: 'ignore'; reason: string };

interface MatchOptions {
  /** The guest's sshd port, never forwarded (default 22). */
  sshPort?: number;
  /**
   * The host port this host reaches the VM's sshd on when that is over loopback (QEMU's hostfwd of
   * `127.0.0.1:2222` to the guest's 22): no forward takes it, or a guest service on the same port would answer
   * `localhost:2222` on ::1 (tried first on macOS) in place of the VM's sshd.
   */
  hostSshPort?: number;
  /** Host addresses a forward binds when no rule names one: the host's loopbacks (host-loopbacks.ts). */
  loopbacks?: readonly string[];
  /** The instance, for the `tether forward add` command a reason suggests (default the placeholder NAME). */
  instance?: string;
}

/** Host addresses a forward binds when no rule names one, on a host that has both loopbacks. */
export const BOTH_LOOPBACKS: readonly string[] = ['127.0.0.1', '::1'];

const ALL_PORTS: [number, number] = [1, 65_535];

/** `::ffff:127.0.0.1` → `127.0.0.1`; other addresses unchanged. */
export function unmapIPv4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1] : ip;
}

function isWildcard(ip: string): boolean {
  const a = unmapIPv4(ip);
  return a === '0.0.0.0' || a === '::';
}

/**
 * 127.0.0.1 or ::1: the guest's localhost. Other 127/8 addresses are system services' own (systemd-resolved's stub
 * on 127.0.0.53 and .54): forwarded only by a rule naming them, as in Lima.
 */
export function isLocalhost(ip: string): boolean {
  const a = unmapIPv4(ip);
  return a === '127.0.0.1' || a === '::1';
}

export function familyOf(ip: string): 4 | 6 {
  return unmapIPv4(ip).includes(':') ? 6 : 4;
}

/**
 * Host IPs of a rule or an added forward: its one address, else the host's loopbacks. `::` means every address, as in
 * `docker run -p`: the IPv4 wildcard too, as a binding of its own (the IPv6 one is IPv6-only), so each family's
 * wildcard stands or falls alone. `0.0.0.0` is IPv4 only, as on Linux.
 */
export function hostIPsOf(hostIP: string | undefined, loopbacks: readonly string[] = BOTH_LOOPBACKS): string[] {
  if (hostIP === '::') return ['0.0.0.0', '::'];
  return hostIP ? [hostIP] : [...loopbacks];
}

/**
 * Where a connection for a forward is sent: a wildcard is reached through a loopback. `::` usually accepts
 * both families, so a host client keeps its own family, with the other loopback to try when that one fails: a
 * guest with IPv6 turned off by sysctl has no ::1, and a `::` socket with IPV6_V6ONLY takes no IPv4.
 */
export function guestTargetIP(ip: string, family: 4 | 6, explicit: boolean): { guestIP: string; fallbackIP?: string } {
  const a = unmapIPv4(ip);
  if (a === '0.0.0.0') return { guestIP: '127.0.0.1' };
  if (a === '::')
    return family === 4 ? { guestIP: '127.0.0.1', fallbackIP: '::1' } : { guestIP: '::1', fallbackIP: '127.0.0.1' };
  // A forward asked for by port (`forward add 8080:5173`, a static rule) means the guest's localhost in whichever
  // family its server took: a dev server bound to `localhost` often listens on ::1 only.
  if (explicit && isLocalhost(a)) return { guestIP: a, fallbackIP: a === '::1' ? '127.0.0.1' : '::1' };
  return { guestIP: a };
}

function guestRange(rule: PortRule): [number, number] {
  return rule.guestPortRange ?? (rule.guestPort !== undefined ? [rule.guestPort, rule.guestPort] : ALL_PORTS);
}

function hostRange(rule: PortRule): [number, number] {
  return rule.hostPortRange ?? (rule.hostPort !== undefined ? [rule.hostPort, rule.hostPort] : guestRange(rule));
}

/** Lima: a guest bound to a wildcard matches any rule; a wildcard rule matches any guest; ::1 matches 127.0.0.1. */
function guestIPMatches(ruleIP: string, listenerIP: string): boolean {
  if (isWildcard(listenerIP) || isWildcard(ruleIP)) return true;
  if (isLocalhost(ruleIP) && isLocalhost(listenerIP)) return true;
  return unmapIPv4(ruleIP) === unmapIPv4(listenerIP);
}

function ruleMatches(rule: PortRule, l: GuestListenerAddr): boolean {
  if (rule.proto !== 'any' && rule.proto !== l.proto) return false;
  const [lo, hi] = guestRange(rule);
  if (l.port < lo || l.port > hi) return false;
  return guestIPMatches(rule.guestIP, l.ip);
}

/** A forward onto the loopback port this host's SSH connection to the VM goes through is ignored instead. */
function sparingSshPort(
  l: GuestListenerAddr,
  forward: Extract<RuleDecision, { action: 'forward' }>,
  opts: MatchOptions,
): RuleDecision {
  if (!takesSshPort(l.proto, forward.hostIPs, forward.hostPort, opts.hostSshPort)) return forward;
  return {
    action: 'ignore',
    reason: `${sshPortTaken(forward.hostPort)}; a portForwards rule with guestPort ${l.port} and another hostPort forwards it`,
  };
}

/**
 * The decision for one guest listener. `rules` is `portForwards` as configured: socket rules are passed over, and
 * stay counted, so that a reason names a rule by its index in the file.
 */
export function matchRule(l: GuestListenerAddr, rules: readonly PortForward[], opts: MatchOptions = {}): RuleDecision {
  const sshPort = opts.sshPort ?? 22;
  if (l.proto === 'tcp' && l.port === sshPort) {
    return { action: 'ignore', reason: `guest sshd port ${sshPort} is never forwarded` };
  }
  for (const [i, rule] of rules.entries()) {
    if (isSocketRule(rule) || !ruleMatches(rule, l)) continue;
    if (rule.ignore) return { action: 'ignore', reason: `ignored by portForwards[${i}]` };
    const offset = l.port - guestRange(rule)[0];
    return sparingSshPort(
      l,
      { action: 'forward', hostIPs: hostIPsOf(rule.hostIP, opts.loopbacks), hostPort: hostRange(rule)[0] + offset },
      opts,
    );
  }
  if (isLocalhost(l.ip) || isWildcard(l.ip)) {
    return sparingSshPort(
      l,
      { action: 'forward', hostIPs: hostIPsOf(undefined, opts.loopbacks), hostPort: l.port },
      opts,
    );
  }
  return {
    action: 'ignore',
    reason: `guest address ${l.ip} is not 127.0.0.1, ::1 or a wildcard; add a portForwards rule with guestIP ${l.ip} to forward it, or run \`tether forward add ${opts.instance ?? 'NAME'} ${l.port}:${l.ip.includes(':') ? `[${l.ip}]` : l.ip}:${l.port}\``,
  };
}
