// Which host address a guest listener is forwarded to, with Lima's rule semantics. Pure: no I/O, no state.
// Order: the built-in ignore of the guest's sshd port, then the configured rules (first match wins), then the
// default rule (guest loopback or wildcard → host 127.0.0.1 and ::1, same port). Non-loopback guest addresses are
// forwarded only when a rule says so.
import type { PortRule } from '../config/schema.js';

export interface GuestListenerAddr {
  proto: 'tcp' | 'udp';
  ip: string;
  port: number;
}

export type RuleDecision =
  | { action: 'forward'; hostIPs: string[]; hostPort: number }
  | { action: 'ignore'; reason: string };

export interface MatchOptions {
  /** The guest's sshd port, never forwarded (default 22). */
  sshPort?: number;
}

/** Host addresses a forward binds when no rule names one. */
export const DEFAULT_HOST_IPS: readonly string[] = ['127.0.0.1', '::1'];

const ALL_PORTS: [number, number] = [1, 65_535];

/** `::ffff:127.0.0.1` → `127.0.0.1`; other addresses unchanged. */
export function unmapIPv4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1] : ip;
}

export function isWildcard(ip: string): boolean {
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

function guestRange(rule: PortRule): [number, number] {
  return rule.guestPortRange ?? (rule.guestPort !== undefined ? [rule.guestPort, rule.guestPort] : ALL_PORTS);
}

function hostRange(rule: PortRule): [number, number] {
  return rule.hostPortRange ?? (rule.hostPort !== undefined ? [rule.hostPort, rule.hostPort] : guestRange(rule));
}

/** Lima: a guest bound to a wildcard matches any rule; a wildcard rule matches any guest; ::1 matches 127.0.0.1. */
export function guestIPMatches(ruleIP: string, listenerIP: string): boolean {
  if (isWildcard(listenerIP) || isWildcard(ruleIP)) return true;
  if (isLocalhost(ruleIP) && isLocalhost(listenerIP)) return true;
  return unmapIPv4(ruleIP) === unmapIPv4(listenerIP);
}

export function ruleMatches(rule: PortRule, l: GuestListenerAddr): boolean {
  if (rule.proto !== 'any' && rule.proto !== l.proto) return false;
  const [lo, hi] = guestRange(rule);
  if (l.port < lo || l.port > hi) return false;
  return guestIPMatches(rule.guestIP, l.ip);
}

/** The decision for one guest listener. `rules` may contain only port rules (socket rules are not passed here). */
export function matchRule(l: GuestListenerAddr, rules: readonly PortRule[], opts: MatchOptions = {}): RuleDecision {
  const sshPort = opts.sshPort ?? 22;
  if (l.proto === 'tcp' && l.port === sshPort) {
    return { action: 'ignore', reason: `guest sshd port ${sshPort} is never forwarded` };
  }
  for (const [i, rule] of rules.entries()) {
    if (!ruleMatches(rule, l)) continue;
    if (rule.ignore) return { action: 'ignore', reason: `ignored by portForwards[${i}]` };
    const offset = l.port - guestRange(rule)[0];
    return {
      action: 'forward',
      hostIPs: rule.hostIP ? [rule.hostIP] : [...DEFAULT_HOST_IPS],
      hostPort: hostRange(rule)[0] + offset,
    };
  }
  if (isLocalhost(l.ip) || isWildcard(l.ip)) {
    return { action: 'forward', hostIPs: [...DEFAULT_HOST_IPS], hostPort: l.port };
  }
  return {
    action: 'ignore',
    reason: `guest address ${l.ip} is not 127.0.0.1, ::1 or a wildcard; add a portForwards rule with guestIP ${l.ip} to forward it`,
  };
}
