import { spawnSync } from 'node:child_process';
import type { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { canRunTestbed } from '../../../test/helpers/testbed.js';
import { hostLoopbacks } from './host-loopbacks.js';

type Interfaces = ReturnType<typeof networkInterfaces>;

const lo = (...addresses: string[]): Interfaces => ({
  lo: addresses.map((address) => ({
    address,
    netmask: address.includes(':') ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.0.0.0',
    family: address.includes(':') ? 'IPv6' : 'IPv4',
    mac: '00:00:00:00:00:00',
    internal: true,
    cidr: null,
    ...(address.includes(':') ? { scopeid: 0 } : {}),
  })) as Interfaces[string],
});

describe('hostLoopbacks', () => {
  it('keeps the loopbacks the host has', () => {
    expect(hostLoopbacks(() => lo('127.0.0.1', '::1'))).toEqual(['127.0.0.1', '::1']);
    expect(hostLoopbacks(() => lo('127.0.0.1'))).toEqual(['127.0.0.1']);
  });

  it('falls back to both when the list cannot be read or has neither, so a bind error says what is wrong', () => {
    expect(
      hostLoopbacks(() => {
        throw new Error('uv_interface_addresses failed');
      }),
    ).toEqual(['127.0.0.1', '::1']);
    expect(hostLoopbacks(() => ({}))).toEqual(['127.0.0.1', '::1']);
  });

  describe.skipIf(!canRunTestbed())('in a network namespace', () => {
    // The interface list of a fresh namespace whose loopback is up, as Node reads it there.
    function interfacesIn(setup: string): Interfaces {
      const read = `node -e 'console.log(JSON.stringify(require("os").networkInterfaces()))'`;
      const r = spawnSync('unshare', ['-n', 'sh', '-ec', `${setup}\nip link set lo up\n${read}`], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`unshare failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as Interfaces;
    }

    it('finds no ::1 on a host with IPv6 turned off, and both where it is on', () => {
      expect(hostLoopbacks(() => interfacesIn('sysctl -qw net.ipv6.conf.lo.disable_ipv6=1'))).toEqual(['127.0.0.1']);
      expect(hostLoopbacks(() => interfacesIn(':'))).toEqual(['127.0.0.1', '::1']);
    });
  });
});
