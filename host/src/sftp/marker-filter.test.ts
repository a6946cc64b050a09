// The marker-touch filter on its own (chunkings, ids, what passes, where replies go, malformed input, backpressure)
// and in front of the real OpenSSH sftp-server.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Transform } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ATTR, EXT, FX, FXP, MAX_PACKET_LENGTH } from './constants.js';
import { markerFilter, markerTouchId } from './marker-filter.js';
import { PacketReader, PacketWriter, SftpPacketSplitter } from './packet.js';

const warnings: string[] = [];
const log = { warn: (_o: object, msg: string) => void warnings.push(msg) };

const touch = (type: number, id: number, atime: number, mtime: number, target = 'f.txt') =>
  new PacketWriter(type).u32(id).string(target).u32(ATTR.ACMODTIME).u32(atime).u32(mtime).finish();
const marker = (id: number, target = 'f.txt') => touch(FXP.SETSTAT, id, 1, 2, target);
const fmarker = (id: number) => touch(FXP.FSETSTAT, id, 1, 2, 'handle-7');
const lmarker = (id: number, target = 'f.txt') =>
  new PacketWriter(FXP.EXTENDED).u32(id).string(EXT.LSETSTAT).string(target).u32(ATTR.ACMODTIME).u32(1).u32(2).finish();
const write = (id: number, bytes: number) =>
  new PacketWriter(FXP.WRITE, bytes + 32)
    .u32(id)
    .string('handle-7')
    .u64(0)
    .bytes(Buffer.alloc(bytes, id & 0xff))
    .finish();
const rename = (id: number) =>
  new PacketWriter(FXP.EXTENDED).u32(id).string(EXT.POSIX_RENAME).string('a').string('b').finish();
const init = () => new PacketWriter(FXP.INIT).u32(3).finish();
const version = () => new PacketWriter(FXP.VERSION).u32(3).finish();
const data = (id: number, bytes: number) =>
  new PacketWriter(FXP.DATA, bytes + 16).u32(id).bytes(Buffer.alloc(bytes, 0x5a)).finish();

/** Cuts `buf` into chunks of the given sizes (cycled). */
function cut(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < buf.length; i++) {
    const n = sizes[i % sizes.length];
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

function collect(stream: Transform): () => Buffer {
  const got: Buffer[] = [];
  stream.on('data', (d: Buffer) => got.push(Buffer.from(d)));
  return () => Buffer.concat(got);
}

/** A filter whose server has sent its VERSION (replies may go out from then on). */
function started() {
  const f = markerFilter(log);
  f.replies.write(version());
  return f;
}

/** STATUS packets (after the VERSION) as [id, code]. */
function statuses(bytes: Buffer): [number, number][] {
  const packets = new SftpPacketSplitter(1 << 30).push(bytes).filter((p) => p[0] !== FXP.VERSION);
  return packets.map((p) => {
    const r = new PacketReader(p);
    expect(r.u8()).toBe(FXP.STATUS);
    return [r.u32(), r.u32()];
  });
}

const tick = () => new Promise((r) => setImmediate(r));

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 2_000) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('markerTouchId', () => {
  it('knows the three marker touches by their times alone', () => {
    expect(markerTouchId(marker(7))).toBe(7);
    expect(markerTouchId(fmarker(8))).toBe(8);
    expect(markerTouchId(lmarker(9))).toBe(9);
    expect(markerTouchId(touch(FXP.SETSTAT, 10, 2, 2))).toBeNull(); // touch -d: both alike
    expect(markerTouchId(touch(FXP.SETSTAT, 11, 1_700_000_000, 1_700_000_000))).toBeNull();
    const withMode = new PacketWriter(FXP.SETSTAT)
      .u32(12)
      .string('f')
      .u32(ATTR.PERMISSIONS | ATTR.ACMODTIME)
      .u32(0o644)
      .u32(1)
      .u32(2)
      .finish();
    expect(markerTouchId(withMode)).toBeNull();
    expect(markerTouchId(rename(13))).toBeNull();
    expect(markerTouchId(marker(14).subarray(0, 20))).toBeNull(); // truncated: sftp-server's to refuse
  });
});

describe('marker filter', () => {
  const stream = Buffer.concat([
    init(),
    write(1, 70_000),
    marker(2),
    touch(FXP.SETSTAT, 3, 1_000_000_000, 1_000_000_000),
    fmarker(4),
    rename(5),
    lmarker(6),
    write(7, 100),
    marker(8),
  ]);
  const passed = Buffer.concat([
    init(),
    write(1, 70_000),
    touch(FXP.SETSTAT, 3, 1_000_000_000, 1_000_000_000),
    rename(5),
    write(7, 100),
  ]);

  for (const sizes of [[stream.length], [1], [2, 3, 5, 7], [4], [5], [6], [31, 4096], [65_536]]) {
    it(`answers markers and passes the rest unchanged, in order (chunks of ${sizes.join(',')})`, async () => {
      const f = started();
      const forwarded = collect(f.requests);
      const replied = collect(f.replies);
      for (const c of cut(stream, sizes)) f.requests.write(c);
      await tick();
      expect(forwarded().equals(passed)).toBe(true);
      expect(statuses(replied())).toEqual([
        [2, FX.OK],
        [4, FX.OK],
        [6, FX.OK],
        [8, FX.OK],
      ]);
      expect(f.answered()).toBe(4);
    });
  }

  it('slips a reply in only where a server packet ends', async () => {
    const f = started();
    const toGuest = collect(f.replies);
    collect(f.requests);
    const big = data(1, 100_000);
    const [first, ...rest] = cut(big, [3, 40_000]);
    f.replies.write(first); // the server is inside a packet's length prefix...
    f.requests.write(marker(2));
    f.replies.write(rest[0]); // ...then inside its body
    f.requests.write(lmarker(3));
    await tick();
    expect(toGuest().length).toBe(version().length + 3 + 40_000); // nothing injected yet
    for (const c of rest.slice(1)) f.replies.write(c);
    f.replies.write(data(4, 10)); // the next server packet comes after the injected ones
    await tick();
    const packets = new SftpPacketSplitter(1 << 30).push(toGuest());
    expect(packets.map((p) => [p[0], p.readUInt32BE(1)])).toEqual([
      [FXP.VERSION, 3],
      [FXP.DATA, 1],
      [FXP.STATUS, 2],
      [FXP.STATUS, 3],
      [FXP.DATA, 4],
    ]);
    expect(packets[1].equals(big.subarray(4))).toBe(true);
  });

  it("sends no reply before the server's VERSION", async () => {
    const f = markerFilter(log);
    const toGuest = collect(f.replies);
    collect(f.requests);
    f.requests.write(Buffer.concat([init(), marker(1)]));
    await tick();
    expect(toGuest().length).toBe(0);
    f.replies.write(version());
    await tick();
    const packets = new SftpPacketSplitter(1 << 30).push(toGuest());
    expect(packets.map((p) => p[0])).toEqual([FXP.VERSION, FXP.STATUS]);
  });

  it('answers at once when the server is between packets', async () => {
    const f = started();
    const toGuest = collect(f.replies);
    collect(f.requests);
    f.replies.write(data(1, 10));
    f.requests.write(marker(2));
    await tick();
    const packets = new SftpPacketSplitter(1 << 30).push(toGuest());
    expect(packets.map((p) => p[0])).toEqual([FXP.VERSION, FXP.DATA, FXP.STATUS]);
  });

  it('drops a marker that arrives after the server has gone, while the guest is not reading, without an error', async () => {
    const f = started();
    collect(f.requests);
    const errors: Error[] = [];
    for (const side of [f.requests, f.replies]) side.on('error', (e: Error) => errors.push(e));
    // The server's output ends while its VERSION still waits for the guest: the reply side is ended, not done.
    f.replies.end();
    await new Promise((resolve) => f.replies.once('finish', resolve));
    f.requests.write(marker(3));
    await tick();
    expect(errors).toEqual([]);
    const toGuest = collect(f.replies);
    await tick();
    expect(new SftpPacketSplitter(1 << 30).push(toGuest()).map((p) => p[0])).toEqual([FXP.VERSION]);
  });

  it('passes a length sftp-server refuses through unfiltered, and says so', async () => {
    warnings.length = 0;
    const f = started();
    const forwarded = collect(f.requests);
    const replied = collect(f.replies);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(MAX_PACKET_LENGTH + 1);
    huge[4] = FXP.WRITE;
    const bytes = Buffer.concat([marker(1), huge, marker(2)]);
    for (const c of cut(bytes, [3])) f.requests.write(c);
    await tick();
    expect(forwarded().equals(Buffer.concat([huge, marker(2)]))).toBe(true);
    expect(statuses(replied())).toEqual([[1, FX.OK]]);
    expect(warnings.some((w) => w.includes('packet length'))).toBe(true);
  });

  it('passes a packet cut short by EOF on as it came, and says so', async () => {
    warnings.length = 0;
    const f = started();
    const forwarded = collect(f.requests);
    const ended = new Promise((r) => f.requests.on('end', r));
    const partial = marker(1).subarray(0, 15);
    f.requests.end(Buffer.concat([rename(0), partial]));
    await ended;
    expect(forwarded().equals(Buffer.concat([rename(0), partial]))).toBe(true);
    expect(warnings.some((w) => w.includes('inside a packet'))).toBe(true);
  });

  it('stops taking requests while the guest does not read its answers', async () => {
    const f = started();
    collect(f.requests);
    const many = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => marker(i)));
    let accepted = true;
    for (const c of cut(many, [16_384])) accepted = f.requests.write(c) && accepted;
    await tick();
    expect(accepted).toBe(false);
    // Bounded: at most the high-water mark plus the answers to one chunk wait for the guest.
    expect(f.replies.readableLength).toBeLessThan(f.replies.readableHighWaterMark + 16_384);
    expect(f.answered()).toBeLessThan(20_000);
    const replied = collect(f.replies); // the guest reads again
    await waitFor(() => f.answered() === 20_000);
    await tick();
    expect(statuses(replied()).length).toBe(20_000);
  });
});

describe.skipIf(!existsSync('/usr/lib/openssh/sftp-server'))('marker filter in front of OpenSSH sftp-server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-marker-filter-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs `requests` through the filter into sftp-server (-R when readOnly) and returns its STATUS replies. */
  async function session(root: string, requests: Buffer[], readOnly = false): Promise<[number, number][]> {
    const child = spawn('/usr/lib/openssh/sftp-server', ['-e', '-d', root, ...(readOnly ? ['-R'] : [])]);
    const f = markerFilter(log);
    f.requests.pipe(child.stdin);
    child.stdout.pipe(f.replies);
    const out = collect(f.replies);
    const done = new Promise((r) => child.on('exit', r));
    f.requests.write(Buffer.concat([init(), ...requests]));
    // sftp-server exits at its input's EOF without finishing its output: the end waits for every reply.
    const decoder = new SftpPacketSplitter(1 << 30);
    const packets: Buffer[] = [];
    f.replies.on('data', (d: Buffer) => packets.push(...decoder.push(Buffer.from(d))));
    await waitFor(() => packets.length === requests.length + 1);
    f.requests.end();
    await done;
    const [version, ...rest] = new SftpPacketSplitter(1 << 30).push(out());
    expect(version[0]).toBe(FXP.VERSION);
    return rest.map((p) => {
      const r = new PacketReader(p);
      expect(r.u8()).toBe(FXP.STATUS);
      return [r.u32(), r.u32()];
    });
  }

  it('keeps the times of the file and of a file outside the export a symlink leads to', async () => {
    const root = join(dir, 'export');
    const outside = join(dir, 'outside.txt');
    mkdirSync(root);
    writeFileSync(join(root, 'f.txt'), 'x');
    writeFileSync(outside, 'y');
    symlinkSync(outside, join(root, 'lnk'));
    const before = [statSync(join(root, 'f.txt')).mtimeMs, statSync(outside).mtimeMs, lstatSync(join(root, 'lnk'))];
    const replies = await session(root, [
      marker(1, join(root, 'f.txt')),
      marker(2, join(root, 'lnk')),
      lmarker(3, join(root, 'lnk')),
      touch(FXP.SETSTAT, 4, 978_307_200, 978_307_200, join(root, 'f.txt')), // a real one still applies
    ]);
    expect(replies).toEqual([
      [1, FX.OK],
      [2, FX.OK],
      [3, FX.OK],
      [4, FX.OK],
    ]);
    expect(statSync(outside).mtimeMs).toBe(before[1]);
    expect(statSync(join(root, 'f.txt')).mtimeMs).toBe(978_307_200_000);
  });

  it('answers a marker touch OK on a read-only export, where sftp-server refuses a real one', async () => {
    const root = join(dir, 'ro');
    mkdirSync(root);
    writeFileSync(join(root, 'f.txt'), 'x');
    const replies = await session(
      root,
      [marker(1, join(root, 'f.txt')), touch(FXP.SETSTAT, 2, 5, 5, join(root, 'f.txt'))],
      true,
    );
    expect(replies).toEqual([
      [1, FX.OK],
      [2, FX.PERMISSION_DENIED],
    ]);
  });
});
