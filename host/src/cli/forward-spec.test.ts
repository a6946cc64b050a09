import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ForwardView } from '../model.js';
import { matchForwards, parsePortSpec, parseSocketSpec } from './forward-spec.js';

describe('forward specs', () => {
  it('parses port specs', () => {
    expect(parsePortSpec('8080:80')).toEqual({ proto: 'tcp', hostPort: 8080, guestPort: 80 });
    expect(parsePortSpec('127.0.0.2:8080:80')).toEqual({
      proto: 'tcp',
      hostIP: '127.0.0.2',
      hostPort: 8080,
      guestPort: 80,
    });
    expect(parsePortSpec('[::1]:5353:53/udp')).toEqual({ proto: 'udp', hostIP: '::1', hostPort: 5353, guestPort: 53 });
    expect(parsePortSpec('5353:53/UDP')).toEqual({ proto: 'udp', hostPort: 5353, guestPort: 53 });
    expect(parsePortSpec('localhost:8080:80')).toEqual({ proto: 'tcp', hostPort: 8080, guestPort: 80 });
    expect(parsePortSpec('3000')).toEqual({ proto: 'tcp', hostPort: 3000, guestPort: 3000 });
    expect(parsePortSpec('53/udp')).toEqual({ proto: 'udp', hostPort: 53, guestPort: 53 });
  });

  it('rejects bad specs with the argument and the expected form', () => {
    expect(() => parsePortSpec('127.0.0.1:8080')).toThrow(
      /^127\.0\.0\.1:8080: expected \[HOSTIP:\]HOSTPORT:GUESTPORT\[\/udp\] or PORT\[\/udp\]/,
    );
    expect(() => parsePortSpec('0')).toThrow('0: port 0 is not a port (1-65535)');
    expect(() => parsePortSpec('70000:80')).toThrow('70000:80: host port 70000 is not a port (1-65535)');
    expect(() => parsePortSpec('1.2.3:80:80')).toThrow('1.2.3 is not an IP address');
    expect(() => parsePortSpec('[::ffff:127.0.0.1]:8080:80')).toThrow(
      'a host cannot listen on ::ffff:127.0.0.1; give the IPv4 address itself, 127.0.0.1',
    );
    expect(() => parsePortSpec('80:80/sctp')).toThrow(/expected/);
    expect(() => parsePortSpec('::1:8080:80/udp')).toThrow(
      '::1:8080:80/udp: put an IPv6 host address in brackets, e.g. [::1]:8080:80/udp',
    );
    expect(parsePortSpec('[::1]:8080:80/udp')).toMatchObject({ hostIP: '::1', hostPort: 8080, guestPort: 80 });
  });

  it('reads a guest address between the ports, as ssh -L does', () => {
    expect(parsePortSpec('18004:127.0.0.53:53')).toEqual({
      proto: 'tcp',
      hostPort: 18004,
      guestIP: '127.0.0.53',
      guestPort: 53,
    });
    expect(parsePortSpec('127.0.0.1:8080:[::1]:80/udp')).toEqual({
      proto: 'udp',
      hostIP: '127.0.0.1',
      hostPort: 8080,
      guestIP: '::1',
      guestPort: 80,
    });
    expect(parsePortSpec('8080:localhost:80')).toEqual({ proto: 'tcp', hostPort: 8080, guestPort: 80 });
    expect(() => parsePortSpec('8080:10.0.0:80')).toThrow('8080:10.0.0:80: 10.0.0 is not an IP address');
  });

  it('parses socket specs', () => {
    const dir = '/home/me/.tether/dev';
    expect(parseSocketSpec('/var/run/docker.sock:/tmp/d.sock', dir)).toEqual({
      proto: 'unix',
      guestSocket: '/var/run/docker.sock',
      hostSocket: '/tmp/d.sock',
    });
    // The guest socket alone: in the instance directory, as a socket rule without hostSocket.
    expect(parseSocketSpec('/var/run/docker.sock', dir)).toEqual({
      proto: 'unix',
      guestSocket: '/var/run/docker.sock',
      hostSocket: '/home/me/.tether/dev/docker.sock',
    });
    expect(() => parseSocketSpec('docker.sock', dir)).toThrow(/^--socket docker\.sock: expected GUEST\[:HOST\]/);
    expect(() => parseSocketSpec(':', dir)).toThrow(/^--socket :: expected GUEST\[:HOST\]/);
    expect(() => parseSocketSpec('run/docker.sock:/tmp/d.sock', dir)).toThrow(
      /guest socket run\/docker\.sock must be an absolute path/,
    );
    // Which ':' separates the paths cannot be told: refused, not guessed.
    expect(() => parseSocketSpec('/tmp/a:b.sock:/tmp/e.sock', dir)).toThrow(/more than one ':'/);
  });

  it('says a spec of three numbers lacks its IP address, rather than calling a port one', () => {
    expect(() => parsePortSpec('8080:80:90')).toThrow(
      /^8080:80:90: expected .* \(three parts: one of the first two is an IP address\), e\.g\. 8080:80/,
    );
  });

  it('matches rm arguments by id, host port, spec and socket path', () => {
    const f = (id: string, proto: ForwardView['proto'], guestAddr: string, hostAddrs: string[]) =>
      ({ id, proto, guestAddr, hostAddrs }) as ForwardView;
    const all = [
      f('tcp/127.0.0.1:80', 'tcp', '127.0.0.1:80', ['127.0.0.1:8080', '[::1]:8080']),
      f('udp/0.0.0.0:53', 'udp', '0.0.0.0:53', ['127.0.0.1:5353']),
      f('unix//var/run/docker.sock', 'unix', '/var/run/docker.sock', ['/tmp/d.sock']),
      f('tcp/127.0.0.1:3000->9000', 'tcp', '127.0.0.1:3000', ['127.0.0.1:9000']),
      f('tcp/127.0.0.1:4000', 'tcp', '127.0.0.1:4000', ['127.0.0.1:4000']),
      f('tcp/127.0.0.1:4000->9400', 'tcp', '127.0.0.1:4000', ['127.0.0.1:9400']),
    ];
    expect(matchForwards('tcp/127.0.0.1:80', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:80']);
    expect(() => matchForwards('abc', all)).toThrow(
      /abc: expected a forward id .*a host port .*a spec .*a socket path/,
    );
    expect(() => matchForwards('8080:99999', all)).toThrow(/is not a port/);
    expect(matchForwards('8080', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:80']);
    // A host port alone is TCP where the port has a TCP forward, as in `forward add`; `/udp` names the UDP one.
    const both = [...all, f('udp/127.0.0.1:5400->8080', 'udp', '127.0.0.1:5400', ['127.0.0.1:8080'])];
    expect(matchForwards('8080', both).map((x) => x.id)).toEqual(['tcp/127.0.0.1:80']);
    expect(matchForwards('8080/udp', both).map((x) => x.id)).toEqual(['udp/127.0.0.1:5400->8080']);
    expect(matchForwards('5353', both).map((x) => x.id)).toEqual(['udp/0.0.0.0:53']);
    expect(matchForwards('5353/tcp', both)).toEqual([]);
    expect(matchForwards('[::1]:8080:80', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:80']);
    expect(matchForwards('5353:53/udp', all).map((x) => x.id)).toEqual(['udp/0.0.0.0:53']);
    expect(matchForwards('5353:53', all)).toEqual([]);
    expect(matchForwards('/tmp/d.sock', all).map((x) => x.id)).toEqual(['unix//var/run/docker.sock']);
    // A relative path, as `forward add --socket` took it: from the current directory.
    const here = [...all, f('unix//run/x.sock', 'unix', '/run/x.sock', [join(process.cwd(), 'x.sock')])];
    expect(matchForwards('x.sock', here).map((x) => x.id)).toEqual(['unix//run/x.sock']);
    expect(matchForwards('./x.sock', here).map((x) => x.id)).toEqual(['unix//run/x.sock']);
    // An id is never read as a spec: one that names nothing matches nothing.
    expect(matchForwards('tcp/127.0.0.1:81', all)).toEqual([]);
    // proto/guest address, as `forward ls` shows them, also names a forward to another host port.
    expect(matchForwards('tcp/127.0.0.1:3000', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:3000->9000']);
    expect(matchForwards('tcp/127.0.0.1:3000->9000', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:3000->9000']);
    // An exact id names that forward alone, not every forward of the same guest address.
    expect(matchForwards('tcp/127.0.0.1:4000', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:4000']);
    // A forward that followed its server to the guest's ::1 is named as `forward ls` shows it, with or without its
    // host port.
    const moved = [f('tcp/127.0.0.1:8126->18200', 'tcp', '[::1]:8126', ['0.0.0.0:18200', '[::]:18200'])];
    expect(matchForwards('tcp/[::1]:8126->18200', moved).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8126->18200']);
    expect(matchForwards('tcp/[::1]:8126', moved).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8126->18200']);
    expect(matchForwards('tcp/[::1]:8126->18201', moved)).toEqual([]);
    // A forward removed once is ignored and binds no host port: its port still names it.
    const ignored = [{ ...f('tcp/[::]:8103', 'tcp', '[::]:8103', []), state: 'ignored' } as ForwardView];
    expect(matchForwards('8103', ignored).map((x) => x.id)).toEqual(['tcp/[::]:8103']);
    expect(matchForwards('8103/udp', ignored)).toEqual([]);
  });

  it('names the added forward, not the detected one waiting behind it for the same host port', () => {
    const f = (id: string, guestAddr: string, hostAddrs: string[], source: ForwardView['source']) =>
      ({ id, proto: 'tcp', guestAddr, hostAddrs, source }) as ForwardView;
    const all = [
      f('tcp/0.0.0.0:8083', '0.0.0.0:8083', ['127.0.0.1:8083', '[::1]:8083'], 'detected'),
      f('tcp/127.0.0.1:8086->8083', '127.0.0.1:8086', ['127.0.0.1:8083', '[::1]:8083'], 'runtime'),
      f('tcp/127.0.0.1:8086', '127.0.0.1:8086', ['127.0.0.1:8086', '[::1]:8086'], 'detected'),
    ];
    expect(matchForwards('8083', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8086->8083']);
    expect(matchForwards('8083:8086', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8086->8083']);
    expect(matchForwards('tcp/127.0.0.1:8086', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8086']);
    // Only detected forwards named: those.
    expect(matchForwards('8086', all).map((x) => x.id)).toEqual(['tcp/127.0.0.1:8086']);
  });
});
