import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatIPv6Bytes, formatIPv6Words, ProcNetScanner } from './procnet.js';
import type { Listener } from './types.js';

const TCP_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     ';
const TCP6_HEADER =
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const UDP_HEADER =
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            ';

function tcpRow(sl: number, local: string, remote: string, state: string, uid: number, inode: number): string {
  return `  ${sl}: ${local} ${remote} ${state} 00000000:00000000 00:00000000 00000000  ${uid}        0 ${inode} 1 000000003f269f81 100 0 0 10 0`;
}
function udpRow(sl: number, local: string, remote: string, state: string, uid: number, inode: number): string {
  return ` ${sl}: ${local} ${remote} ${state} 00000000:00000000 00:00000000 00000000  ${uid}        0 ${inode} 2 0000000000000000 0`;
}
const ZERO4 = '00000000:0000';
const ZERO6 = '00000000000000000000000000000000:0000';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'tether-procnet-'));
  mkdirSync(join(root, 'net'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function writeTable(name: string, lines: string[]): void {
  writeFileSync(join(root, 'net', name), `${lines.join('\n')}\n`);
}

function brief(ls: Listener[]) {
  return ls.map(({ proto, family, ip, port, inode, uid }) => ({ proto, family, ip, port, inode, uid }));
}

const TCP_FIXTURE = [
  TCP_HEADER,
  tcpRow(0, '0100007F:1F90', ZERO4, '0A', 0, 1001), // 127.0.0.1:8080
  tcpRow(1, '00000000:0016', ZERO4, '0A', 1000, 1002), // 0.0.0.0:22
  tcpRow(2, '0100007F:1F90', '0100007F:D431', '01', 0, 1003), // established: ends the listening part
  tcpRow(3, '0100007F:0050', ZERO4, '0A', 0, 1004), // not reached
];
const TCP6_FIXTURE = [
  TCP6_HEADER,
  tcpRow(0, '00000000000000000000000001000000:0050', ZERO6, '0A', 0, 2001), // ::1:80
  tcpRow(1, `${'0'.repeat(32)}:01BB`, ZERO6, '0A', 0, 2002), // :::443
  tcpRow(2, '0000000000000000FFFF00000100007F:1F91', ZERO6, '0A', 0, 2003), // ::ffff:127.0.0.1:8081
  tcpRow(3, 'B80D0120000000000000000001000000:0035', ZERO6, '0A', 0, 2004), // [2001:db8::1]:53
];
const UDP_FIXTURE = [
  UDP_HEADER,
  udpRow(0, '0100007F:0035', ZERO4, '07', 0, 3001), // 127.0.0.1:53, unconnected
  udpRow(1, '0100007F:A000', '0100007F:0035', '01', 0, 3002), // connected: not a listener
  udpRow(2, '00000000:0044', ZERO4, '07', 0, 3003), // 0.0.0.0:68
];

const EXPECTED = [
  { proto: 'tcp', family: 4, ip: '127.0.0.1', port: 8080, inode: 1001, uid: 0 },
  { proto: 'tcp', family: 4, ip: '0.0.0.0', port: 22, inode: 1002, uid: 1000 },
  { proto: 'tcp', family: 6, ip: '::1', port: 80, inode: 2001, uid: 0 },
  { proto: 'tcp', family: 6, ip: '::', port: 443, inode: 2002, uid: 0 },
  { proto: 'tcp', family: 6, ip: '::ffff:127.0.0.1', port: 8081, inode: 2003, uid: 0 },
  { proto: 'tcp', family: 6, ip: '2001:db8::1', port: 53, inode: 2004, uid: 0 },
  { proto: 'udp', family: 4, ip: '127.0.0.1', port: 53, inode: 3001, uid: 0 },
  { proto: 'udp', family: 4, ip: '0.0.0.0', port: 68, inode: 3003, uid: 0 },
];

describe('ProcNetScanner', () => {
  it('parses little-endian tables, stops TCP at the first non-LISTEN row, keeps unconnected UDP only', () => {
    writeTable('tcp', TCP_FIXTURE);
    writeTable('tcp6', TCP6_FIXTURE);
    writeTable('udp', UDP_FIXTURE);
    const got = new ProcNetScanner({ procRoot: root, littleEndian: true }).scan();
    expect(brief(got)).toEqual(EXPECTED);
    expect(got.every((l) => l.pid === null && l.command === null)).toBe(true);
  });

  it('handles lines split across chunk boundaries, for every tiny chunk size', () => {
    writeTable('tcp', TCP_FIXTURE);
    writeTable('tcp6', TCP6_FIXTURE);
    writeTable('udp', UDP_FIXTURE);
    for (const chunkSize of [1, 7, 64, 150, 151, 4096]) {
      const got = new ProcNetScanner({ procRoot: root, littleEndian: true, chunkSize }).scan();
      expect(brief(got), `chunkSize ${chunkSize}`).toEqual(EXPECTED);
    }
  });

  it('reads every listener whatever number it is told to expect, and again with the widths it learned', () => {
    const many = Array.from({ length: 40 }, (_, i) =>
      tcpRow(i, `0100007F:${(0x2000 + i).toString(16).toUpperCase()}`, ZERO4, '0A', 0, 100 + i),
    );
    const established = tcpRow(40, '0100007F:1F90', '0100007F:C000', '01', 0, 999);
    writeTable('tcp', [TCP_HEADER, ...many, established, ...many.map((r) => r.replace(' 0A ', ' 06 '))]);
    const scanner = new ProcNetScanner({ procRoot: root, littleEndian: true });
    for (const expected of [0, 1, 39, 40, 41, 500, 0, 40]) {
      const got = scanner.readTable(join(root, 'net', 'tcp'), { proto: 'tcp', family: 4 }, [], expected);
      expect(
        got.map((l) => l.inode),
        `expected ${expected}`,
      ).toEqual(many.map((_, i) => 100 + i));
    }
  });

  it('reads a last line without a trailing newline', () => {
    writeFileSync(join(root, 'net', 'udp'), `${UDP_HEADER}\n${udpRow(0, '0100007F:0035', ZERO4, '07', 0, 7)}`);
    const got = new ProcNetScanner({ procRoot: root, littleEndian: true, chunkSize: 16 }).scan();
    expect(brief(got)).toEqual([{ proto: 'udp', family: 4, ip: '127.0.0.1', port: 53, inode: 7, uid: 0 }]);
  });

  it('returns nothing for header-only tables and missing files', () => {
    writeTable('tcp', [TCP_HEADER]);
    writeTable('udp', [UDP_HEADER]);
    expect(new ProcNetScanner({ procRoot: root }).scan()).toEqual([]);
    rmSync(join(root, 'net'), { recursive: true });
    expect(new ProcNetScanner({ procRoot: root }).scan()).toEqual([]);
  });

  it('ignores garbage lines without stopping the TCP table', () => {
    writeTable('tcp', [
      TCP_HEADER,
      'garbage',
      '',
      '   0: ZZZZZZZZ:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1',
      tcpRow(1, '0100007F:1F90', ZERO4, 'XY', 0, 5),
      tcpRow(2, '0100007F:1F9', ZERO4, '0A', 0, 6), // port too short
      tcpRow(3, '0100007F:1F90', ZERO4, '0A', 0, 9),
      'y'.repeat(3000),
      tcpRow(4, '0100007F:1F91', ZERO4, '0A', 0, 10),
      '\0\xff\xfe binary',
      'x'.repeat(5000), // longer than the read buffer: it must grow, not loop
    ]);
    const got = new ProcNetScanner({ procRoot: root, littleEndian: true, chunkSize: 7 }).scan();
    expect(brief(got)).toEqual([
      { proto: 'tcp', family: 4, ip: '127.0.0.1', port: 8080, inode: 9, uid: 0 },
      { proto: 'tcp', family: 4, ip: '127.0.0.1', port: 8081, inode: 10, uid: 0 },
    ]);
  });

  it('decodes big-endian hosts, where each word is printed in network order', () => {
    writeTable('tcp', [TCP_HEADER, tcpRow(0, '7F000001:1F90', ZERO4, '0A', 0, 1)]);
    writeTable('tcp6', [TCP6_HEADER, tcpRow(0, '00000000000000000000FFFF7F000001:0050', ZERO6, '0A', 0, 2)]);
    const got = new ProcNetScanner({ procRoot: root, littleEndian: false }).scan();
    expect(got.map((l) => l.ip)).toEqual(['127.0.0.1', '::ffff:127.0.0.1']);
  });
});

describe('IPv6 text (RFC 5952)', () => {
  const bytes = (...groups: number[]) => groups.flatMap((g) => [g >> 8, g & 0xff]);
  it.each([
    [bytes(0, 0, 0, 0, 0, 0, 0, 0), '::'],
    [bytes(0, 0, 0, 0, 0, 0, 0, 1), '::1'],
    [bytes(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), '2001:db8::1'],
    [bytes(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1), '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    [bytes(0x2001, 0, 0, 1, 0, 0, 0, 1), '2001:0:0:1::1'], // the longest run wins
    [bytes(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), '2001:db8::1:0:0:1'], // the first run wins a tie
    [bytes(0xfe80, 0, 0, 0, 0xabcd, 0xef, 0x1, 0), 'fe80::abcd:ef:1:0'],
    [bytes(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001), '::ffff:10.0.0.1'],
    [bytes(1, 2, 3, 4, 5, 6, 7, 0), '1:2:3:4:5:6:7:0'],
  ])('%j → %s', (b, text) => {
    expect(formatIPv6Bytes(b)).toBe(text);
  });

  it('decodes host-order words', () => {
    expect(formatIPv6Words([0, 0, 0xffff0000, 0x0100007f], true)).toBe('::ffff:127.0.0.1');
    expect(formatIPv6Words([0x20010db8, 0, 0, 1], false)).toBe('2001:db8::1');
  });
});
