import { describe, expect, it } from 'vitest';
import { PortRule, SocketRule } from '../config/schema.js';
import { type GuestListenerAddr, guestTargetIP, matchRule, type RuleDecision } from './rules.js';

const rule = (r: Record<string, unknown>) => PortRule.parse(r);
const both = ['127.0.0.1', '::1'];
const tcp = (ip: string, port: number): GuestListenerAddr => ({ proto: 'tcp', ip, port });
const udp = (ip: string, port: number): GuestListenerAddr => ({ proto: 'udp', ip, port });
const fwd = (hostPort: number, hostIPs = both): RuleDecision => ({ action: 'forward', hostIPs, hostPort });

const cases: {
  name: string;
  l: GuestListenerAddr;
  rules: PortRule[];
  sshPort?: number;
  hostSshPort?: number;
  want: RuleDecision | 'ignore';
}[] = [
  { name: 'default: 127.0.0.1 → both loopbacks', l: tcp('127.0.0.1', 8080), rules: [], want: fwd(8080) },
  { name: 'default: 0.0.0.0', l: tcp('0.0.0.0', 8080), rules: [], want: fwd(8080) },
  { name: 'default: ::', l: tcp('::', 8080), rules: [], want: fwd(8080) },
  { name: 'default: ::1', l: tcp('::1', 8080), rules: [], want: fwd(8080) },
  { name: 'default: 127.0.0.53 (systemd-resolved) ignored', l: udp('127.0.0.53', 53), rules: [], want: 'ignore' },
  { name: 'default: 127.0.0.2 ignored', l: tcp('127.0.0.2', 8080), rules: [], want: 'ignore' },
  {
    name: 'a 127.0.0.1 rule does not take 127.0.0.53',
    l: tcp('127.0.0.53', 53),
    rules: [rule({ guestPort: 53, hostPort: 5353 })],
    want: 'ignore',
  },
  {
    name: 'a rule naming 127.0.0.53 forwards it',
    l: udp('127.0.0.53', 53),
    rules: [rule({ guestIP: '127.0.0.53', guestPort: 53, hostPort: 5353 })],
    want: fwd(5353),
  },
  { name: 'default: ::ffff:127.0.0.1', l: tcp('::ffff:127.0.0.1', 9000), rules: [], want: fwd(9000) },
  {
    name: 'hostIP :: binds both wildcards, 0.0.0.0 only IPv4',
    l: tcp('127.0.0.1', 9001),
    rules: [rule({ guestPort: 9001, hostIP: '::' })],
    want: fwd(9001, ['0.0.0.0', '::']),
  },
  {
    name: 'hostIP 0.0.0.0 binds IPv4 only',
    l: tcp('127.0.0.1', 9002),
    rules: [rule({ guestPort: 9002, hostIP: '0.0.0.0' })],
    want: fwd(9002, ['0.0.0.0']),
  },
  { name: 'default: non-loopback ignored', l: tcp('10.0.2.15', 8080), rules: [], want: 'ignore' },
  { name: 'sshd port ignored', l: tcp('0.0.0.0', 22), rules: [], want: 'ignore' },
  { name: 'custom ssh port ignored', l: tcp('0.0.0.0', 2222), rules: [], sshPort: 2222, want: 'ignore' },
  { name: 'udp 22 not sshd', l: udp('127.0.0.1', 22), rules: [], want: fwd(22) },
  {
    name: 'range with offset',
    l: tcp('127.0.0.1', 8005),
    rules: [rule({ guestPortRange: [8000, 8010], hostPortRange: [9000, 9010] })],
    want: fwd(9005),
  },
  {
    name: 'range with offset, wildcard guest matches a loopback rule',
    l: tcp('0.0.0.0', 8010),
    rules: [rule({ guestPortRange: [8000, 8010], hostPortRange: [9000, 9010] })],
    want: fwd(9010),
  },
  {
    name: 'outside the range falls to default',
    l: tcp('127.0.0.1', 8011),
    rules: [rule({ guestPortRange: [8000, 8010], hostPortRange: [9000, 9010] })],
    want: fwd(8011),
  },
  { name: 'ignore rule', l: tcp('127.0.0.1', 5432), rules: [rule({ guestPort: 5432, ignore: true })], want: 'ignore' },
  {
    name: 'first match wins',
    l: tcp('127.0.0.1', 5432),
    rules: [rule({ guestPort: 5432, hostPort: 15432 }), rule({ guestPort: 5432, ignore: true })],
    want: fwd(15432),
  },
  {
    name: 'proto filters',
    l: udp('127.0.0.1', 5432),
    rules: [rule({ guestPort: 5432, proto: 'tcp', ignore: true })],
    want: fwd(5432),
  },
  {
    name: 'proto any covers udp',
    l: udp('127.0.0.1', 53),
    rules: [rule({ guestPort: 53, ignore: true })],
    want: 'ignore',
  },
  {
    name: 'hostIP binds only that',
    l: tcp('127.0.0.1', 3000),
    rules: [rule({ guestPort: 3000, hostIP: '127.0.0.1' })],
    want: fwd(3000, ['127.0.0.1']),
  },
  {
    name: 'rule for a non-loopback guest IP',
    l: tcp('10.0.2.15', 8080),
    rules: [rule({ guestIP: '10.0.2.15', guestPort: 8080 })],
    want: fwd(8080),
  },
  {
    name: 'wildcard rule matches a non-loopback guest IP',
    l: tcp('192.168.5.15', 7000),
    rules: [rule({ guestIP: '0.0.0.0', guestPort: 7000, hostIP: '0.0.0.0' })],
    want: fwd(7000, ['0.0.0.0']),
  },
  {
    name: 'loopback rule does not match another IP',
    l: tcp('10.0.2.15', 8080),
    rules: [rule({ guestPort: 8080, hostPort: 18080 })],
    want: 'ignore',
  },
  {
    name: 'v6 loopback rule matches v4 loopback listener',
    l: tcp('127.0.0.1', 4000),
    rules: [rule({ guestIP: '::1', guestPort: 4000, hostPort: 14000 })],
    want: fwd(14000),
  },
  {
    name: "the host's loopback SSH port is not taken by a guest service on it",
    l: tcp('0.0.0.0', 2222),
    rules: [],
    hostSshPort: 2222,
    want: 'ignore',
  },
  {
    name: 'nor by a rule mapping onto it; a rule to another host port forwards that service',
    l: tcp('127.0.0.1', 3000),
    rules: [rule({ guestPort: 3000, hostPort: 2222 })],
    hostSshPort: 2222,
    want: 'ignore',
  },
  {
    name: 'a rule moves the service off the SSH port',
    l: tcp('0.0.0.0', 2222),
    rules: [rule({ guestPort: 2222, hostPort: 12222 })],
    hostSshPort: 2222,
    want: fwd(12222),
  },
  {
    name: 'UDP on the SSH port number is forwarded',
    l: udp('0.0.0.0', 2222),
    rules: [],
    hostSshPort: 2222,
    want: fwd(2222),
  },
  {
    name: 'a non-loopback host address on that port is not the SSH way in',
    l: tcp('0.0.0.0', 2222),
    rules: [rule({ guestPort: 2222, hostIP: '192.0.2.10' })],
    hostSshPort: 2222,
    want: fwd(2222, ['192.0.2.10']),
  },
];

describe('matchRule', () => {
  for (const c of cases) {
    it(c.name, () => {
      const got = matchRule(c.l, c.rules, { sshPort: c.sshPort, hostSshPort: c.hostSshPort });
      if (c.want === 'ignore') {
        expect(got.action).toBe('ignore');
        expect(got.action === 'ignore' && got.reason.length).toBeGreaterThan(0);
      } else {
        expect(got).toEqual(c.want);
      }
    });
  }

  it('names an ignoring rule by its index in portForwards, socket rules before it counted', () => {
    const socket = SocketRule.parse({ guestSocket: '/run/docker.sock', hostSocket: '/tmp/docker.sock' });
    const rules = [socket, socket, rule({ guestPort: 8003, ignore: true })];
    expect(matchRule(tcp('127.0.0.1', 8003), rules)).toEqual({
      action: 'ignore',
      reason: 'ignored by portForwards[2]',
    });
    expect(matchRule(tcp('127.0.0.1', 8004), rules)).toEqual(fwd(8004));
  });
});

describe('matchRule on a host without ::1', () => {
  it('gives the loopbacks the host has to forwards that name no host address, and keeps an address a rule names', () => {
    const loopbacks = ['127.0.0.1'];
    expect(matchRule(tcp('0.0.0.0', 8080), [], { loopbacks })).toEqual(fwd(8080, ['127.0.0.1']));
    expect(matchRule(tcp('127.0.0.1', 8080), [rule({ guestPort: 8080, hostPort: 9090 })], { loopbacks })).toEqual(
      fwd(9090, ['127.0.0.1']),
    );
    expect(matchRule(tcp('127.0.0.1', 8080), [rule({ guestPort: 8080, hostIP: '::1' })], { loopbacks })).toEqual(
      fwd(8080, ['::1']),
    );
  });
});

describe('guestTargetIP', () => {
  it('reaches a wildcard through a loopback, a :: one in the client family first', () => {
    expect(guestTargetIP('0.0.0.0', 6, false)).toEqual({ guestIP: '127.0.0.1' });
    expect(guestTargetIP('::', 4, false)).toEqual({ guestIP: '127.0.0.1', fallbackIP: '::1' });
    expect(guestTargetIP('::', 6, false)).toEqual({ guestIP: '::1', fallbackIP: '127.0.0.1' });
  });

  it("tries the other loopback only for a forward asked for by port, which means the guest's localhost", () => {
    expect(guestTargetIP('::ffff:127.0.0.1', 4, true)).toEqual({ guestIP: '127.0.0.1', fallbackIP: '::1' });
    expect(guestTargetIP('::1', 6, true)).toEqual({ guestIP: '::1', fallbackIP: '127.0.0.1' });
    expect(guestTargetIP('::1', 6, false)).toEqual({ guestIP: '::1' });
    expect(guestTargetIP('192.168.5.15', 4, true)).toEqual({ guestIP: '192.168.5.15' });
  });
});
