// Reads the kernel's socket tables (/proc/net/tcp, tcp6, udp, udp6) and returns the listening sockets in them.
// Owns the table format and the address decoding; must not attribute sockets to processes or decide what to report.
//
// Cost matters because this runs several times a second: each scanner reads through ONE reused Buffer in chunks and
// parses bytes in place, building strings only for rows it keeps. The kernel lists LISTEN sockets before every other
// TCP socket, so a TCP table is read only up to its first non-LISTEN row.
//
// What a TCP read costs is mostly the kernel's walk of its socket hashes, not the rows: for every row it prints it
// first looks for the next one, and the established hash is shared by all namespaces and sized by the machine's
// memory (2 ms to walk on a 24 GiB host with nothing in it). A read asks for as many bytes as it needs, so the kernel
// stops after the listeners and the first other row instead of filling a big buffer with rows from all over the hash
// (a 64 KiB read cost the whole walk every time). Reads that must go on grow geometrically.

import { closeSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import type { Listener } from './types.js';

const TCP_LISTEN = 0x0a;
const UDP_UNCONNECTED = 0x07; // TCP_CLOSE: a UDP socket with no peer
const NEWLINE = 0x0a;
// A /proc/net read fills the kernel's seq_file buffer (at least a 4 KiB page) up to the last whole row that fits
// (rows are under 200 bytes), so a read that returns less than this was cut short by the end of the table. Knowing
// that saves the final empty read, which costs the kernel a second walk of the whole established-socket hash.
const SEQ_FULL_READ_MIN = 4096 - 512;
const COLON = 0x3a;
/** Row and header widths assumed for a table not read yet (the IPv4 tables pad rows to 150 bytes). */
const DEFAULT_ROW_BYTES = 150;
// sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode
const FIELDS = 10;
const F_SL = 0;
const F_LOCAL = 1;
const F_REMOTE = 2;
const F_STATE = 3;
const F_UID = 7;
const F_INODE = 9;

export interface ProcNetScannerOptions {
  /** Root of the proc filesystem; tables are read from `<procRoot>/net/`. */
  procRoot?: string;
  /** Bytes per read(2). The buffer grows beyond this only if a single line is longer. */
  chunkSize?: number;
  /** Byte order the kernel printed the address words in; defaults to this host's. */
  littleEndian?: boolean;
}

export interface ProcNetTable {
  file: string;
  proto: Listener['proto'];
  family: Listener['family'];
}

export const PROC_NET_TABLES: readonly ProcNetTable[] = [
  { file: 'tcp', proto: 'tcp', family: 4 },
  { file: 'tcp6', proto: 'tcp', family: 6 },
  { file: 'udp', proto: 'udp', family: 4 },
  { file: 'udp6', proto: 'udp', family: 6 },
];

export class ProcNetScanner {
  readonly procRoot: string;
  private readonly chunkSize: number;
  private readonly littleEndian: boolean;
  private buf: Buffer;
  // Token boundaries of the line being parsed, reused across lines.
  private readonly starts = new Int32Array(FIELDS);
  private readonly ends = new Int32Array(FIELDS);
  private readonly words = new Uint32Array(4);
  /** Per table file: the widths its header and rows had at the last read, to size the next first read. */
  private readonly shapes = new Map<string, { header: number; row: number }>();

  constructor(options: ProcNetScannerOptions = {}) {
    this.procRoot = options.procRoot ?? '/proc';
    this.chunkSize = Math.max(1, options.chunkSize ?? 64 * 1024);
    this.littleEndian = options.littleEndian ?? endianness() === 'LE';
    this.buf = Buffer.allocUnsafe(Math.max(this.chunkSize, 512));
  }

  /** Every listening socket in all four tables, in table order; duplicates (SO_REUSEPORT) are kept. */
  scan(out: Listener[] = []): Listener[] {
    for (const table of PROC_NET_TABLES) this.readTable(join(this.procRoot, 'net', table.file), table, out);
    return out;
  }

  /**
   * Appends the listening sockets of one table file to `out`. A missing file (no IPv6) contributes nothing.
   * `expectedListeners` (how many the caller found last time) sizes a TCP table's first read to end just past them.
   */
  readTable(path: string, table: Omit<ProcNetTable, 'file'>, out: Listener[], expectedListeners = 0): Listener[] {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    const shape = this.shapes.get(path) ?? { header: DEFAULT_ROW_BYTES, row: DEFAULT_ROW_BYTES };
    this.shapes.set(path, shape);
    // UDP tables have no order to stop at: read in whole chunks.
    let ask = table.proto === 'tcp' ? shape.header + (expectedListeners + 1) * shape.row : this.chunkSize;
    let header = true;
    try {
      let carry = 0;
      for (;;) {
        if (carry === this.buf.length) this.grow();
        const wanted = Math.min(ask, this.chunkSize, this.buf.length - carry);
        ask *= 2;
        const n = readSync(fd, this.buf, carry, wanted, null);
        const end = carry + n;
        let lineStart = 0;
        for (;;) {
          const nl = this.buf.indexOf(NEWLINE, lineStart);
          if (nl === -1 || nl >= end) break;
          if (header) shape.header = nl + 1 - lineStart;
          else shape.row = Math.max(shape.row, nl + 1 - lineStart);
          header = false;
          if (!this.parseLine(lineStart, nl, table, out)) return out;
          lineStart = nl + 1;
        }
        if (n === 0 || n < Math.min(wanted, SEQ_FULL_READ_MIN)) {
          if (lineStart < end) this.parseLine(lineStart, end, table, out);
          return out;
        }
        this.buf.copyWithin(0, lineStart, end);
        carry = end - lineStart;
      }
    } finally {
      closeSync(fd);
    }
  }

  private grow(): void {
    const bigger = Buffer.allocUnsafe(this.buf.length * 2);
    this.buf.copy(bigger);
    this.buf = bigger;
  }

  /** Parses buf[start, end); appends a listener if the row is one. Returns false when the table need not be read further. */
  private parseLine(start: number, end: number, table: Omit<ProcNetTable, 'file'>, out: Listener[]): boolean {
    const buf = this.buf;
    if (tokenize(buf, start, end, this.starts, this.ends) < FIELDS) return true;
    const { starts, ends } = this;
    if (ends[F_SL] - starts[F_SL] < 2 || buf[ends[F_SL] - 1] !== COLON) return true;
    const state = parseHex(buf, starts[F_STATE], ends[F_STATE]);
    if (state < 0 || ends[F_STATE] - starts[F_STATE] !== 2) return true;
    if (table.proto === 'tcp') {
      // Listening sockets come first; the first other row ends the interesting part of the table.
      if (state !== TCP_LISTEN) return false;
    } else if (state !== UDP_UNCONNECTED || !isZeroAddress(buf, starts[F_REMOTE], ends[F_REMOTE])) {
      return true;
    }
    const addrLen = table.family === 4 ? 8 : 32;
    const ls = starts[F_LOCAL];
    if (ends[F_LOCAL] - ls !== addrLen + 5 || buf[ls + addrLen] !== COLON) return true;
    const port = parseHex(buf, ls + addrLen + 1, ends[F_LOCAL]);
    const uid = parseDecimal(buf, starts[F_UID], ends[F_UID]);
    const inode = parseDecimal(buf, starts[F_INODE], ends[F_INODE]);
    if (port < 0 || uid < 0 || inode < 0) return true;
    const words = this.words;
    for (let i = 0; i < addrLen / 8; i++) {
      const w = parseHex(buf, ls + i * 8, ls + i * 8 + 8);
      if (w < 0) return true;
      words[i] = w;
    }
    const ip =
      table.family === 4 ? formatIPv4Word(words[0], this.littleEndian) : formatIPv6Words(words, this.littleEndian);
    out.push({ proto: table.proto, family: table.family, ip, port, inode, uid, pid: null, command: null });
    return true;
  }
}

/** Records up to starts.length space-separated tokens of buf[start, end); returns how many were found. */
function tokenize(buf: Buffer, start: number, end: number, starts: Int32Array, ends: Int32Array): number {
  let count = 0;
  let i = start;
  while (count < starts.length) {
    while (i < end && (buf[i] === 0x20 || buf[i] === 0x09 || buf[i] === 0x0d)) i++;
    if (i >= end) break;
    starts[count] = i;
    while (i < end && buf[i] !== 0x20 && buf[i] !== 0x09 && buf[i] !== 0x0d) i++;
    ends[count++] = i;
  }
  return count;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** Unsigned value of up to 8 hex digits in buf[start, end), or -1 if malformed. */
function parseHex(buf: Buffer, start: number, end: number): number {
  if (end <= start || end - start > 8) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    const d = hexDigit(buf[i]);
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/** Non-negative decimal in buf[start, end) (inodes exceed 32 bits), or -1 if malformed. */
function parseDecimal(buf: Buffer, start: number, end: number): number {
  if (end <= start || end - start > 15) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c < 0x30 || c > 0x39) return -1;
    v = v * 10 + (c - 0x30);
  }
  return v;
}

/** True for `00000000:0000` and its IPv6 form: a socket with no peer. */
function isZeroAddress(buf: Buffer, start: number, end: number): boolean {
  if (end - start < 13) return false;
  for (let i = start; i < end; i++) if (buf[i] !== 0x30 && buf[i] !== COLON) return false;
  return true;
}

/** The kernel prints each 32-bit word of a network-order address as a host-order integer. */
function wordBytes(word: number, littleEndian: boolean, into: number[]): void {
  if (littleEndian) into.push(word & 0xff, (word >>> 8) & 0xff, (word >>> 16) & 0xff, word >>> 24);
  else into.push(word >>> 24, (word >>> 16) & 0xff, (word >>> 8) & 0xff, word & 0xff);
}

function formatIPv4Word(word: number, littleEndian: boolean): string {
  const b: number[] = [];
  wordBytes(word, littleEndian, b);
  return b.join('.');
}

export function formatIPv6Words(words: ArrayLike<number>, littleEndian: boolean): string {
  const b: number[] = [];
  for (let i = 0; i < 4; i++) wordBytes(words[i], littleEndian, b);
  return formatIPv6Bytes(b);
}

/** RFC 5952 text of a 16-byte address; IPv4-mapped addresses keep their dotted tail (`::ffff:127.0.0.1`). */
export function formatIPv6Bytes(b: ArrayLike<number>): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  // The longest run of two or more zero groups (the first, on a tie) becomes `::`.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}
