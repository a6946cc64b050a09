// The change tap inside the marker filter: which host paths a session's requests change, in any chunking of either
// direction, with the bytes still passing unchanged; and in front of the real OpenSSH sftp-server.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Transform } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ChangeTap } from './change-tap.js';
import { ATTR, EXT, FX, FXF, FXP } from './constants.js';
import { markerFilter } from './marker-filter.js';
import { PacketReader, PacketWriter, SftpPacketSplitter, statusPacket } from './packet.js';

const log = { warn: () => undefined };

const req = (type: number, id: number) => new PacketWriter(type).u32(id);
const open = (id: number, path: string, pflags: number) => req(FXP.OPEN, id).string(path).u32(pflags).u32(0).finish();
const write = (id: number, handle: Buffer, bytes: number) =>
  new PacketWriter(FXP.WRITE, bytes + 32).u32(id).bytes(handle).u64(0).bytes(Buffer.alloc(bytes, 0x61)).finish();
const close = (id: number, handle: Buffer) => req(FXP.CLOSE, id).bytes(handle).finish();
const onePath = (type: number, id: number, path: string) => req(type, id).string(path).finish();
const mkdir = (id: number, path: string) => req(FXP.MKDIR, id).string(path).u32(0).finish();
const setstat = (id: number, path: string, mode: number) =>
  req(FXP.SETSTAT, id).string(path).u32(ATTR.PERMISSIONS).u32(mode).finish();
const marker = (id: number, path: string) =>
  req(FXP.SETSTAT, id).string(path).u32(ATTR.ACMODTIME).u32(1).u32(2).finish();
const twoPaths = (type: number, id: number, a: string, b: string) => req(type, id).string(a).string(b).finish();
const ext = (id: number, name: string, a: string, b: string) =>
  req(FXP.EXTENDED, id).string(name).string(a).string(b).finish();
const stat = (id: number, path: string) => onePath(FXP.LSTAT, id, path);
const handleReply = (id: number, handle: Buffer) => new PacketWriter(FXP.HANDLE).u32(id).bytes(handle).finish();
const ok = (id: number) => statusPacket(id, FX.OK, 'ok');
const version = () => new PacketWriter(FXP.VERSION).u32(3).finish();

function cut(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < buf.length; i++) {
    out.push(buf.subarray(off, off + sizes[i % sizes.length]));
    off += sizes[i % sizes.length];
  }
  return out;
}

function collect(stream: Transform): () => Buffer {
  const got: Buffer[] = [];
  stream.on('data', (d: Buffer) => got.push(Buffer.from(d)));
  return () => Buffer.concat(got);
}

const tick = () => new Promise((r) => setImmediate(r));

describe('change tap in the marker filter', () => {
  const h1 = Buffer.from([0, 0, 0, 1]);
  const h2 = Buffer.from([0, 0, 0, 2]);

  for (const sizes of [[1], [2, 3, 5, 7], [4], [5], [31, 4096], [1 << 20]]) {
    it(`reports what the requests change and passes every byte (chunks of ${sizes.join(',')})`, async () => {
      const changed: string[] = [];
      const removed = new Set<string>();
      const f = markerFilter(
        log,
        new ChangeTap('/r', (p, gone) => {
          changed.push(p);
          if (gone) removed.add(p);
        }),
      );
      const toServer = collect(f.requests);
      const toGuest = collect(f.replies);
      const send = async (requests: Buffer[], replies: Buffer[]) => {
        for (const c of cut(Buffer.concat(requests), sizes)) f.requests.write(c);
        await tick();
        for (const c of cut(Buffer.concat(replies), sizes)) f.replies.write(c);
        await tick();
      };
      const first = [
        open(1, 'new.txt', FXF.WRITE | FXF.CREAT | FXF.TRUNC),
        open(2, '/r/log.txt', FXF.WRITE | FXF.APPEND),
        open(3, '/r/read-only.txt', FXF.READ),
        mkdir(4, '/r/dir'),
        stat(5, '/r/looked-at'),
        marker(6, '/r/touched-by-the-applier'),
      ];
      await send(first, [version(), handleReply(1, h1), handleReply(2, h2)]);
      await send([], [handleReply(3, Buffer.from('h3')), ok(4), ok(5)]);
      expect(new Set(changed)).toEqual(new Set(['/r/new.txt', '/r/dir']));
      changed.length = 0;

      const second = [
        write(7, h2, 10),
        write(8, h2, 10), // within 5 ms of the last report: not one of its own
        write(9, Buffer.from('unknown'), 70_000),
        close(10, h2),
        close(11, h1), // opened with CREAT, never written: nothing more to report
        twoPaths(FXP.RENAME, 12, '/r/a', '/r/b'),
        twoPaths(FXP.SYMLINK, 13, 'target-elsewhere', '/r/lnk'),
        ext(14, EXT.POSIX_RENAME, '/r/c', '/r/d'),
        ext(15, EXT.HARDLINK, '/r/e', '/r/f'),
        onePath(FXP.REMOVE, 16, '/r/gone'),
        onePath(FXP.RMDIR, 17, '/r/gone-dir'),
        setstat(18, '/r/chmodded', 0o600),
      ];
      await send(second, [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18].map(ok));
      const expected = ['/r/log.txt', '/r/a', '/r/b', '/r/lnk', '/r/c', '/r/d', '/r/e', '/r/f', '/r/gone'];
      expect(new Set(changed)).toEqual(new Set([...expected, '/r/gone-dir', '/r/chmodded']));
      // Reported as each request passed and again as its reply did.
      expect(changed.filter((p) => p === '/r/gone')).toHaveLength(2);
      expect(changed.filter((p) => p === '/r/log.txt')).toHaveLength(4); // the first write and the close, twice
      // Names taken away: removes and renames' sources (a hard link's source stays).
      expect(removed).toEqual(new Set(['/r/a', '/r/c', '/r/gone', '/r/gone-dir']));

      const sentToServer = [...first.filter((p) => p[4] !== FXP.SETSTAT), ...second];
      expect(toServer().equals(Buffer.concat(sentToServer))).toBe(true);
      const replies = new SftpPacketSplitter(1 << 30).push(toGuest());
      expect(replies.map((p) => p[0])).toContain(FXP.HANDLE);
      expect(replies).toHaveLength(1 + 3 + 2 + 12 + 1); // the marker touch answered by the filter
    });
  }
});

describe.skipIf(!existsSync('/usr/lib/openssh/sftp-server'))('change tap in front of OpenSSH sftp-server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-change-tap-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names each path the requests change, relative ones under the start directory', async () => {
    writeFileSync(join(dir, 'old.txt'), 'x');
    const changed: string[] = [];
    const child = spawn('/usr/lib/openssh/sftp-server', ['-e', '-d', dir]);
    const f = markerFilter(log, new ChangeTap(dir, (p) => changed.push(p)));
    f.requests.pipe(child.stdin);
    child.stdout.pipe(f.replies);
    const decoder = new SftpPacketSplitter(1 << 30);
    const replies: Buffer[] = [];
    f.replies.on('data', (d: Buffer) => replies.push(...decoder.push(Buffer.from(d))));
    const until = async (n: number) => {
      for (let i = 0; replies.length < n; i++) {
        if (i > 2_000) throw new Error(`timed out waiting for reply ${n}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    f.requests.write(new PacketWriter(FXP.INIT).u32(3).finish());
    f.requests.write(open(1, 'made.txt', FXF.WRITE | FXF.CREAT | FXF.TRUNC));
    await until(2);
    const handle = new PacketReader(replies[1]);
    expect(handle.u8()).toBe(FXP.HANDLE);
    handle.u32();
    const h = handle.bytes();
    changed.length = 0;
    f.requests.write(
      Buffer.concat([write(2, h, 100_000), close(3, h), ext(4, EXT.POSIX_RENAME, 'old.txt', 'new.txt')]),
    );
    await until(5);
    expect(replies.slice(2).map((p) => new PacketReader(p.subarray(5)).u32())).toEqual([FX.OK, FX.OK, FX.OK]);
    expect(readFileSync(join(dir, 'made.txt')).length).toBe(100_000);
    expect(new Set(changed)).toEqual(new Set([join(dir, 'made.txt'), join(dir, 'old.txt'), join(dir, 'new.txt')]));
    f.requests.end();
    await new Promise((r) => child.on('exit', r));
  });
});
