import { describe, expect, it } from 'vitest';
import { parseNatRules } from './dnat.js';

// Lines as `iptables -t nat -S` prints them for k3s (CNI portmap), rootful Podman (netavark) and Docker.
const TABLE = `-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-N CNI-DN-4c2a1b9d0e3f5a6b7c8d9
-N CNI-HOSTPORT-DNAT
-N DOCKER
-N NETAVARK-DN-1D8721804F16F
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -s 10.42.0.0/24 -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.42.0.8:80
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -d 127.0.0.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.42.0.8:443
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.42.0.9:53
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -d 10.0.0.0/8 -p tcp -m tcp --dport 9000 -j DNAT --to-destination 10.42.0.8:9000
-A CNI-DN-4c2a1b9d0e3f5a6b7c8d9 -p tcp -m tcp --dport 7000:7010 -j DNAT --to-destination 10.42.0.8:7000-7010
-A NETAVARK-DN-1D8721804F16F -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 5000 -j DNAT --to-destination 172.17.0.2:5000
`;

const CNI = 'CNI-DN-4c2a1b9d0e3f5a6b7c8d9';

describe('parseNatRules', () => {
  it('reads one listener per DNAT rule of a publishing chain, with the rule as its command', () => {
    const got = parseNatRules(TABLE).map((l) => [l.proto, l.ip, l.port, l.pid, l.command]);
    const range = (port: number) => ['tcp', '0.0.0.0', port, null, `iptables DNAT to 10.42.0.8:7000-7010 (${CNI})`];
    expect(got).toEqual([
      ['tcp', '0.0.0.0', 80, null, `iptables DNAT to 10.42.0.8:80 (${CNI})`],
      ['tcp', '127.0.0.1', 8443, null, `iptables DNAT to 10.42.0.8:443 (${CNI})`],
      ['udp', '0.0.0.0', 5353, null, `iptables DNAT to 10.42.0.9:53 (${CNI})`],
      ...Array.from({ length: 11 }, (_, i) => range(7000 + i)),
      ['tcp', '0.0.0.0', 8080, null, 'iptables DNAT to 10.88.0.2:80 (NETAVARK-DN-1D8721804F16F)'],
    ]);
  });

  it('skips what it cannot forward: subnets, negated matches, long ranges, other chains, other targets, junk', () => {
    expect(
      parseNatRules('-A CNI-DN-x ! -d 127.0.0.0/8 -p tcp --dport 80 -j DNAT --to-destination 1.2.3.4:1\n'),
    ).toEqual([]);
    expect(parseNatRules('-A CNI-DN-x -p tcp --dport 1000:2000 -j DNAT --to-destination 1.2.3.4:1\n')).toEqual([]);
    expect(parseNatRules('-A CNI-DN-x -p tcp --dport 70000 -j DNAT --to-destination 1.2.3.4:1\n')).toEqual([]);
    expect(parseNatRules('-A CNI-DN-x -p sctp --dport 80 -j DNAT --to-destination 1.2.3.4:1\n')).toEqual([]);
    expect(parseNatRules('-A CNI-DN-x -p tcp --dport 80 -j DNAT\n')).toEqual([]);
    expect(parseNatRules('-A CNI-DN-x ! -p tcp --dport 80 -j DNAT --to-destination 1.2.3.4:1\n')).toEqual([]);
    expect(parseNatRules('\u0000\u00ff garbage\n-A\n-A CNI-DN-\n')).toEqual([]);
  });
});
