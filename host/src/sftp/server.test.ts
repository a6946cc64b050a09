// Unit tests of the SFTP server over an in-memory stream pair, speaking raw SFTP packets.
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { MARKER_TOUCH } from '@tether/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ATTR, EXT, FX, FXF, FXP, MAX_PACKET_LENGTH } from './constants.js';
import { PacketReader, PacketWriter, SftpPacketSplitter } from './packet.js';
import { type SftpServerOptions, type SftpSession, serveSftp } from './server.js';

interface Reply {
  type: number;
  id: number;
  r: PacketReader;
}

/** A minimal SFTP client over a PassThrough pair, for driving the server with exact packets. */
class RawClient {
  readonly toServer = new PassThrough();
  readonly fromServer = new PassThrough();
  readonly session: SftpSession;
  readonly closed: Promise<{ reason: string }>;
  private nextId = 1;
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private versionWaiter: ((r: PacketReader) => void) | null = null;

  constructor(opts: SftpServerOptions) {
    this.session = serveSftp(Duplex.from({ readable: this.toServer, writable: this.fromServer }), opts);
    this.closed = new Promise((resolve) => this.session.once('close', resolve));
    const decoder = new SftpPacketSplitter(1 << 24);
    this.fromServer.on('data', (chunk: Buffer) => {
      for (const p of decoder.push(chunk)) {
        const r = new PacketReader(p);
        const type = r.u8();
        if (type === FXP.VERSION) {
          this.versionWaiter?.(r);
          continue;
        }
        const id = r.u32();
        this.waiting.get(id)?.({ type, id, r });
        this.waiting.delete(id);
      }
    });
  }

  async init(): Promise<Map<string, string>> {
    const got = new Promise<PacketReader>((resolve) => {
      this.versionWaiter = resolve;
    });
    this.toServer.write(new PacketWriter(FXP.INIT).u32(3).finish());
    const r = await got;
    expect(r.u32()).toBe(3);
    const ext = new Map<string, string>();
    while (r.remaining > 0) ext.set(r.string(), r.string());
    return ext;
  }

  /** Sends a request built by `fill` (fields after the id) and resolves with the reply. */
  request(type: number, fill: (w: PacketWriter) => void): Promise<Reply> {
    const id = this.nextId++;
    const w = new PacketWriter(type).u32(id);
    fill(w);
    const reply = new Promise<Reply>((resolve) => this.waiting.set(id, resolve));
    this.toServer.write(w.finish());
    return reply;
  }

  /** Sends one request per `fill` in a single write (one chunk for the server), resolving with their replies. */
  requestBurst(type: number, fills: ((w: PacketWriter) => void)[]): Promise<Reply>[] {
    const packets: Buffer[] = [];
    const replies = fills.map((fill) => {
      const id = this.nextId++;
      const w = new PacketWriter(type).u32(id);
      fill(w);
      packets.push(w.finish());
      return new Promise<Reply>((resolve) => this.waiting.set(id, resolve));
    });
    this.toServer.write(Buffer.concat(packets));
    return replies;
  }

  extended(name: string, fill: (w: PacketWriter) => void = () => {}): Promise<Reply> {
    return this.request(FXP.EXTENDED, (w) => {
      w.string(name);
      fill(w);
    });
  }

  path(type: number, path: string): Promise<Reply> {
    return this.request(type, (w) => w.string(path));
  }

  open(path: string, pflags: number, mode?: number): Promise<Reply> {
    return this.request(FXP.OPEN, (w) => {
      w.string(path).u32(pflags);
      if (mode === undefined) w.u32(0);
      else w.u32(ATTR.PERMISSIONS).u32(mode);
    });
  }

  async handle(reply: Promise<Reply>): Promise<Buffer> {
    const r = await reply;
    if (r.type !== FXP.HANDLE) throw new Error(`expected HANDLE, got ${describeReply(r)}`);
    return Buffer.from(r.r.bytes());
  }

  async write(h: Buffer, offset: number, data: Buffer): Promise<Reply> {
    return this.request(FXP.WRITE, (w) => w.bytes(h).u64(offset).bytes(data));
  }

  read(h: Buffer, offset: number, len: number): Promise<Reply> {
    return this.request(FXP.READ, (w) => w.bytes(h).u64(offset).u32(len));
  }

  close(h: Buffer): Promise<Reply> {
    return this.request(FXP.CLOSE, (w) => w.bytes(h));
  }

  async names(reply: Promise<Reply>): Promise<string[]> {
    const r = await reply;
    if (r.type !== FXP.NAME) throw new Error(`expected NAME, got ${describeReply(r)}`);
    const out: string[] = [];
    for (let n = r.r.u32(); n > 0; n--) {
      out.push(r.r.string());
      r.r.string();
      skipAttrs(r.r);
    }
    return out;
  }

  async readdir(path: string): Promise<string[]> {
    const h = await this.handle(this.path(FXP.OPENDIR, path));
    const all: string[] = [];
    for (;;) {
      const reply = this.request(FXP.READDIR, (w) => w.bytes(h));
      const r = await reply;
      if (r.type === FXP.STATUS) {
        expect(statusOf(r).code).toBe(FX.EOF);
        break;
      }
      all.push(...(await this.names(Promise.resolve(r))));
    }
    expectStatus(await this.close(h), FX.OK);
    return all;
  }
}

function skipAttrs(r: PacketReader): void {
  const flags = r.u32();
  if (flags & ATTR.SIZE) r.u64();
  const u32s = (flags & ATTR.UIDGID ? 2 : 0) + (flags & ATTR.PERMISSIONS ? 1 : 0) + (flags & ATTR.ACMODTIME ? 2 : 0);
  for (let i = 0; i < u32s; i++) r.u32();
}

function statusOf(reply: Reply): { code: number; message: string } {
  if (reply.type !== FXP.STATUS) throw new Error(`expected STATUS, got type ${reply.type}`);
  return { code: reply.r.u32(), message: reply.r.string() };
}

function describeReply(r: Reply): string {
  return r.type === FXP.STATUS ? `STATUS ${JSON.stringify(statusOf(r))}` : `type ${r.type}`;
}

function expectStatus(reply: Reply, code: number, message?: RegExp): void {
  const st = statusOf(reply);
  expect(st.code, st.message).toBe(code);
  if (message) expect(st.message).toMatch(message);
}

function attrsOf(reply: Reply): { size: number; mode: number; mtime: number } {
  expect(reply.type, reply.type === FXP.STATUS ? describeReply(reply) : '').toBe(FXP.ATTRS);
  const r = reply.r;
  const flags = r.u32();
  expect(flags & 0xf).toBe(0xf);
  const size = r.u64();
  r.u64();
  const mode = r.u32();
  r.u32();
  return { size, mode, mtime: r.u32() };
}

let tmp: string;
let root: string;
let outside: string;
let client: RawClient;

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'tether-sftp-'));
  root = join(tmp, 'export');
  outside = join(tmp, 'outside');
  await fsp.mkdir(root);
  await fsp.mkdir(outside);
  await fsp.writeFile(join(outside, 'secret'), 'top secret');
});

afterEach(async () => {
  client?.session.close('test done');
  await client?.closed;
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function start(opts: Partial<SftpServerOptions> = {}): Promise<RawClient> {
  client = new RawClient({ root, ...opts });
  await client.init();
  return client;
}

describe('handshake', () => {
  it('answers INIT with version 3 and the OpenSSH extensions', async () => {
    client = new RawClient({ root });
    const ext = await client.init();
    for (const name of Object.values(EXT)) expect(ext.has(name), name).toBe(true);
  });

  it('reports its limits', async () => {
    const c = await start({ maxHandles: 7 });
    const r = await c.extended(EXT.LIMITS);
    expect(r.type).toBe(FXP.EXTENDED_REPLY);
    expect(r.r.u64()).toBe(MAX_PACKET_LENGTH);
    expect(r.r.u64()).toBeGreaterThan(32768);
    expect(r.r.u64()).toBeGreaterThan(32768);
    expect(r.r.u64()).toBe(7);
  });
});

describe('files', () => {
  it('writes, reads back, and reports EOF', async () => {
    const c = await start();
    const h = await c.handle(c.open(`${root}/a.txt`, FXF.WRITE | FXF.CREAT | FXF.TRUNC, 0o640));
    expectStatus(await c.write(h, 0, Buffer.from('hello ')), FX.OK);
    expectStatus(await c.write(h, 6, Buffer.from('world')), FX.OK);
    expectStatus(await c.close(h), FX.OK);
    expect(await fsp.readFile(join(root, 'a.txt'), 'utf8')).toBe('hello world');
    expect((await fsp.stat(join(root, 'a.txt'))).mode & 0o777).toBe(0o640);

    const rh = await c.handle(c.open('a.txt', FXF.READ));
    const d = await c.read(rh, 6, 100);
    expect(d.type).toBe(FXP.DATA);
    expect(d.r.bytes().toString()).toBe('world');
    expectStatus(await c.read(rh, 11, 100), FX.EOF);
    expect(c.session.stats).toMatchObject({ bytesRead: 5, bytesWritten: 11, openHandles: 1 });
    expectStatus(await c.close(rh), FX.OK);
    expect(c.session.stats.openHandles).toBe(0);
  });

  it('answers a zero-length read inside the file with no data, not EOF', async () => {
    await fsp.writeFile(join(root, 'z'), 'some bytes');
    const c = await start();
    const h = await c.handle(c.open('z', FXF.READ));
    const d = await c.read(h, 4, 0);
    expect(d.type, describeReply(d)).toBe(FXP.DATA);
    expect(d.r.bytes().length).toBe(0);
    expectStatus(await c.close(h), FX.OK);
  });

  it('applies pipelined OPEN(CREAT) then LSTAT in arrival order (200 files)', async () => {
    const c = await start();
    const replies: Promise<Reply>[] = [];
    for (let i = 0; i < 200; i++) {
      replies.push(c.open(`f${i}`, FXF.WRITE | FXF.CREAT | FXF.EXCL, 0o644));
      replies.push(c.path(FXP.LSTAT, `f${i}`));
    }
    const all = await Promise.all(replies);
    for (let i = 0; i < all.length; i += 2) {
      expect(all[i].type).toBe(FXP.HANDLE);
      expect(attrsOf(all[i + 1]).size).toBe(0);
    }
  });

  it('serves concurrent reads of one handle with the right data', async () => {
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    await fsp.writeFile(join(root, 'big'), data);
    const c = await start();
    const h = await c.handle(c.open('big', FXF.READ));
    const chunks = await Promise.all(
      Array.from({ length: 32 }, (_, i) => c.read(h, i * 32768, 32768).then((r) => Buffer.from(r.r.bytes()))),
    );
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  });

  it('answers a burst of large READs in one chunk without queueing all the replies while the client reads nothing', async () => {
    const data = Buffer.alloc(4 << 20);
    for (let i = 0; i < data.length; i += 4096) data[i] = (i >> 12) & 0xff;
    await fsp.writeFile(join(root, 'big'), data);
    // A stream that hands the server input in whole chunks (as an SSH channel does) and takes replies only when told.
    const out: Buffer[] = [];
    let reading = false;
    const stalled: (() => void)[] = [];
    const stream = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, done) {
        out.push(chunk);
        if (reading) done();
        else stalled.push(done);
      },
    });
    const session = serveSftp(stream, { root });
    const send = (type: number, id: number, fill: (w: PacketWriter) => void) => {
      const w = new PacketWriter(type).u32(id);
      fill(w);
      return w.finish();
    };
    stream.push(
      Buffer.concat([
        new PacketWriter(FXP.INIT).u32(3).finish(),
        send(FXP.OPEN, 1, (w) => w.string('big').u32(FXF.READ).u32(0)),
      ]),
    );
    const turns = async (n: number) => {
      for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
    };
    await turns(5);
    const replies = () => {
      const splitter = new SftpPacketSplitter(1 << 24);
      return out.flatMap((chunk) => splitter.push(chunk));
    };
    const handle = replies()
      .map((p) => new PacketReader(p))
      .find((r) => r.u8() === FXP.HANDLE && r.u32() === 1)
      ?.bytes();
    expect(handle).toBeDefined();
    const len = 255 * 1024;
    const n = 400; // ~100 MiB of replies asked for in ~12 KiB of requests
    const offsetOf = (i: number) => (i * len) % data.length;
    stream.push(
      Buffer.concat(
        Array.from({ length: n }, (_, i) => send(FXP.READ, 100 + i, (w) => w.bytes(handle!).u64(offsetOf(i)).u32(len))),
      ),
    );
    await turns(20);
    const produced = out.reduce((sum, b) => sum + b.length, 0) + stream.writableLength;
    expect(produced).toBeGreaterThan(len);
    expect(produced).toBeLessThan(12 << 20);
    // The client reads again: every reply arrives, in order, with its data.
    reading = true;
    for (const done of stalled.splice(0)) done();
    const deadline = Date.now() + 10_000;
    let dataReplies = replies().filter((p) => p[0] === FXP.DATA);
    while (dataReplies.length < n && Date.now() < deadline) {
      await turns(1);
      dataReplies = replies().filter((p) => p[0] === FXP.DATA);
    }
    expect(dataReplies.length).toBe(n);
    dataReplies.forEach((p, i) => {
      const r = new PacketReader(p);
      r.u8();
      expect(r.u32()).toBe(100 + i);
      const offset = offsetOf(i);
      expect(r.bytes().equals(data.subarray(offset, offset + len))).toBe(true);
    });
    session.close('test done');
  });

  it('caps a READ at the advertised maximum', async () => {
    await fsp.writeFile(join(root, 'big'), Buffer.alloc(MAX_PACKET_LENGTH * 2));
    const c = await start();
    const h = await c.handle(c.open('big', FXF.READ));
    const r = await c.read(h, 0, MAX_PACKET_LENGTH * 2);
    expect(r.r.bytes().length).toBeLessThan(MAX_PACKET_LENGTH);
  });

  it('sets and reports attributes by path and by handle', async () => {
    await fsp.writeFile(join(root, 'f'), '0123456789');
    const c = await start();
    const set = await c.request(FXP.SETSTAT, (w) =>
      w
        .string('f')
        .u32(ATTR.SIZE | ATTR.PERMISSIONS | ATTR.ACMODTIME)
        .u64(4)
        .u32(0o600)
        .u32(1000)
        .u32(2000),
    );
    expectStatus(set, FX.OK);
    expect(attrsOf(await c.path(FXP.STAT, 'f'))).toMatchObject({ size: 4, mtime: 2000 });
    expect(attrsOf(await c.path(FXP.STAT, 'f')).mode & 0o777).toBe(0o600);
    const h = await c.handle(c.open('f', FXF.READ | FXF.WRITE));
    expectStatus(await c.request(FXP.FSETSTAT, (w) => w.bytes(h).u32(ATTR.SIZE).u64(1)), FX.OK);
    expect(attrsOf(await c.request(FXP.FSTAT, (w) => w.bytes(h))).size).toBe(1);
    expectStatus(await c.extended(EXT.FSYNC, (w) => w.bytes(h)), FX.OK);
  });

  it('never makes set-user-ID or set-group-ID files or directories on the host', async () => {
    await fsp.writeFile(join(root, 'f'), 'x');
    const c = await start();
    const mode = async (name: string) => (await fsp.stat(join(root, name))).mode & 0o7777;
    expectStatus(await c.request(FXP.SETSTAT, (w) => w.string('f').u32(ATTR.PERMISSIONS).u32(0o4755)), FX.OK);
    expect(await mode('f')).toBe(0o755);
    const h = await c.handle(c.open('f', FXF.READ | FXF.WRITE));
    expectStatus(await c.request(FXP.FSETSTAT, (w) => w.bytes(h).u32(ATTR.PERMISSIONS).u32(0o6711)), FX.OK);
    expect(await mode('f')).toBe(0o711);
    expectStatus(await c.close(h), FX.OK);
    const created = await c.handle(c.open('new', FXF.WRITE | FXF.CREAT, 0o6755));
    expectStatus(await c.close(created), FX.OK);
    expect((await mode('new')) & 0o6000).toBe(0);
    expectStatus(await c.request(FXP.MKDIR, (w) => w.string('d').u32(ATTR.PERMISSIONS).u32(0o3775)), FX.OK);
    // The sticky bit stays: it gives no one more rights.
    expect((await mode('d')) & 0o7000).toBe(0o1000);
  });

  it("gives files only to the agent's own user and groups, whoever runs it", async () => {
    await fsp.writeFile(join(root, 'f'), 'x');
    const before = await fsp.stat(join(root, 'f'));
    const c = await start();
    const chown = (uid: number, gid: number) =>
      c.request(FXP.SETSTAT, (w) => w.string('f').u32(ATTR.UIDGID).u32(uid).u32(gid));
    // Unchanged ids are fine (cp -p, tar x as the same user).
    expectStatus(await chown(before.uid, before.gid), FX.OK);
    // chown(2)'s -1, "leave it", as `chown USER f` and `chgrp G f` send it for the other id.
    const keep = 0xffff_ffff;
    expectStatus(await chown(before.uid, keep), FX.OK);
    expectStatus(await chown(keep, before.gid), FX.OK);
    const stranger = 54321;
    expectStatus(await chown(stranger, keep), FX.PERMISSION_DENIED);
    expectStatus(await chown(stranger, before.gid), FX.PERMISSION_DENIED);
    expectStatus(await chown(before.uid, stranger), FX.PERMISSION_DENIED);
    const h = await c.handle(c.open('f', FXF.READ));
    expectStatus(
      await c.request(FXP.FSETSTAT, (w) => w.bytes(h).u32(ATTR.UIDGID).u32(stranger).u32(stranger)),
      FX.PERMISSION_DENIED,
    );
    const after = await fsp.stat(join(root, 'f'));
    expect([after.uid, after.gid]).toEqual([before.uid, before.gid]);
  });

  it('refuses to remove or rename the root of the export', async () => {
    const c = await start();
    expectStatus(await c.path(FXP.RMDIR, root), FX.PERMISSION_DENIED, /is the root of the mount/);
    expectStatus(await c.path(FXP.RMDIR, '.'), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.REMOVE, root), FX.PERMISSION_DENIED);
    expectStatus(await c.request(FXP.RENAME, (w) => w.string(root).string('moved')), FX.PERMISSION_DENIED);
    expectStatus(await c.extended(EXT.POSIX_RENAME, (w) => w.string('.').string('moved')), FX.PERMISSION_DENIED);
    await fsp.mkdir(join(root, 'sub'));
    expectStatus(await c.extended(EXT.POSIX_RENAME, (w) => w.string('sub').string(root)), FX.PERMISSION_DENIED);
    expect((await fsp.stat(root)).isDirectory()).toBe(true);
    expect((await fsp.stat(join(root, 'sub'))).isDirectory()).toBe(true);
    // Its entries still go as usual.
    expectStatus(await c.path(FXP.RMDIR, 'sub'), FX.OK);
  });

  it('logs a write the host cannot take (a full device) as a warning with its path, and keeps serving', async () => {
    const warnings: string[] = [];
    const log = { debug() {}, info() {}, error() {}, warn: (_obj: object, msg: string) => warnings.push(msg) };
    // /dev/full answers every write with ENOSPC: the export is /dev, so the device is inside it.
    const c = await start({ root: '/dev', log });
    const h = await c.handle(c.open('full', FXF.WRITE));
    expectStatus(await c.write(h, 0, Buffer.from('data')), FX.FAILURE, /ENOSPC/);
    expectStatus(await c.write(h, 4, Buffer.from('more')), FX.FAILURE, /ENOSPC/);
    expect(warnings).toEqual(['sftp write of /dev/full failed on the host: ENOSPC: no space left on device, write']);
    expectStatus(await c.close(h), FX.OK);
    expect(attrsOf(await c.path(FXP.STAT, 'null')).size).toBe(0);
  });

  it('maps errno errors to SFTP status codes', async () => {
    await fsp.mkdir(join(root, 'full'));
    await fsp.writeFile(join(root, 'full', 'x'), '');
    const c = await start();
    expectStatus(await c.path(FXP.STAT, 'missing'), FX.NO_SUCH_FILE);
    expectStatus(await c.path(FXP.REMOVE, 'missing'), FX.NO_SUCH_FILE);
    expectStatus(await c.path(FXP.RMDIR, 'full'), FX.FAILURE, /ENOTEMPTY/);
    expectStatus(await c.open('full/x', FXF.WRITE | FXF.CREAT | FXF.EXCL), FX.FAILURE, /EEXIST/);
  });
});

describe('directories and names', () => {
  it('lists a directory in batches including . and ..', async () => {
    const c = await start();
    expectStatus(await c.request(FXP.MKDIR, (w) => w.string('d').u32(0)), FX.OK);
    for (let i = 0; i < 250; i++) await fsp.writeFile(join(root, 'd', `e${i}`), '');
    const names = await c.readdir('d');
    expect(names.length).toBe(252);
    expect(new Set(names).size).toBe(252);
    expect(names.slice(0, 2)).toEqual(['.', '..']);
    expectStatus(await c.path(FXP.RMDIR, 'd'), FX.FAILURE);
  });

  it('renames without replacing, and replaces with posix-rename', async () => {
    await fsp.writeFile(join(root, 'a'), 'A');
    await fsp.writeFile(join(root, 'b'), 'B');
    const c = await start();
    expectStatus(await c.request(FXP.RENAME, (w) => w.string('a').string('b')), FX.FAILURE);
    expectStatus(await c.extended(EXT.POSIX_RENAME, (w) => w.string('a').string('b')), FX.OK);
    expect(await fsp.readFile(join(root, 'b'), 'utf8')).toBe('A');
    expectStatus(await c.request(FXP.RENAME, (w) => w.string('b').string('c')), FX.OK);
    expectStatus(await c.extended(EXT.HARDLINK, (w) => w.string('c').string('d')), FX.OK);
    expect((await fsp.stat(join(root, 'd'))).nlink).toBe(2);
  });

  it('reports each changed path, and which of them lost their name (removes, rename sources)', async () => {
    await fsp.writeFile(join(root, 'a'), 'A');
    await fsp.mkdir(join(root, 'dir'));
    const changes: string[] = [];
    const c = await start({
      onChange: (p, removed) => changes.push(`${p.slice(root.length + 1)}${removed ? ' -' : ''}`),
    });
    expectStatus(await c.extended(EXT.POSIX_RENAME, (w) => w.string('a').string('b')), FX.OK);
    expectStatus(await c.extended(EXT.HARDLINK, (w) => w.string('b').string('c')), FX.OK);
    expectStatus(await c.path(FXP.REMOVE, 'b'), FX.OK);
    expectStatus(await c.path(FXP.RMDIR, 'dir'), FX.OK);
    expect(changes).toEqual(['a -', 'b', 'b', 'c', 'b -', 'dir -']);
  });

  it('creates and reads symlinks (OpenSSH argument order: target, link)', async () => {
    await fsp.writeFile(join(root, 'target'), 'T');
    const c = await start();
    expectStatus(await c.request(FXP.SYMLINK, (w) => w.string('target').string('link')), FX.OK);
    expect(await c.names(c.path(FXP.READLINK, 'link'))).toEqual(['target']);
    expect(attrsOf(await c.path(FXP.STAT, 'link')).size).toBe(1);
    expect(attrsOf(await c.path(FXP.LSTAT, 'link')).mode & 0o170000).toBe(0o120000);
  });

  it('answers REALPATH in the client namespace', async () => {
    const c = await start();
    expect(await c.names(c.path(FXP.REALPATH, '.'))).toEqual([root]);
    expect(await c.names(c.path(FXP.REALPATH, ''))).toEqual([root]);
    expect(await c.names(c.path(FXP.REALPATH, 'a/../b'))).toEqual([`${root}/b`]);
  });

  it('accepts the root under a symlinked spelling and answers in that spelling', async () => {
    const alias = join(tmp, 'alias');
    await fsp.symlink(root, alias);
    await fsp.writeFile(join(root, 'f'), 'F');
    client = new RawClient({ root: alias });
    await client.init();
    expect(await client.names(client.path(FXP.REALPATH, '.'))).toEqual([alias]);
    expect(attrsOf(await client.path(FXP.STAT, `${alias}/f`)).size).toBe(1);
    expect(attrsOf(await client.path(FXP.STAT, `${root}/f`)).size).toBe(1);
  });

  it('follows a repoint of a symlinked root and confines to its new target alone', async () => {
    const alias = join(tmp, 'alias');
    const other = join(tmp, 'other');
    await fsp.mkdir(other);
    await fsp.writeFile(join(root, 'f'), 'F');
    await fsp.writeFile(join(other, 'g'), 'GG');
    await fsp.symlink('../export/f', join(other, 'back'));
    await fsp.symlink(root, alias);
    client = new RawClient({ root: alias });
    await client.init();
    expect(attrsOf(await client.path(FXP.STAT, `${alias}/f`)).size).toBe(1);
    // As `ln -sfn other alias` does it: a new link renamed over the old one.
    await fsp.symlink(other, `${alias}.new`);
    await fsp.rename(`${alias}.new`, alias);
    expect(attrsOf(await client.path(FXP.STAT, `${alias}/g`)).size).toBe(2);
    expect(await client.readdir(`${alias}/`)).toEqual(expect.arrayContaining(['.', '..', 'g', 'back']));
    expect(await client.names(client.path(FXP.REALPATH, `${alias}/g`))).toEqual([`${alias}/g`]);
    expectStatus(await client.path(FXP.STAT, `${alias}/f`), FX.NO_SUCH_FILE);
    // The old target is outside the export now, under either spelling, through `..` or a link.
    for (const p of [`${root}/f`, `${alias}/../export/f`, `${alias}/back`]) {
      expectStatus(await client.path(FXP.STAT, p), FX.PERMISSION_DENIED);
      expectStatus(await client.open(p, FXF.READ), FX.PERMISSION_DENIED);
    }
    expectStatus(await client.open(`${root}/new`, FXF.WRITE | FXF.CREAT), FX.PERMISSION_DENIED);
    expect(await exists(join(root, 'new'))).toBe(false);
    // A root whose link dangles fails each request naming it, and serves again once the link leads somewhere.
    await fsp.rm(other, { recursive: true });
    const gone = statusOf(await client.path(FXP.STAT, `${alias}/g`));
    expect(gone).toEqual({ code: FX.NO_SUCH_FILE, message: `host directory ${alias} does not exist` });
    await fsp.mkdir(other);
    await fsp.writeFile(join(other, 'g'), 'GGG');
    expect(attrsOf(await client.path(FXP.STAT, `${alias}/g`)).size).toBe(3);
  });

  it('returns real statvfs numbers', async () => {
    const c = await start();
    const r = await c.extended(EXT.STATVFS, (w) => w.string('.'));
    expect(r.type).toBe(FXP.EXTENDED_REPLY);
    const real = await fsp.statfs(root);
    expect(r.r.u64()).toBe(real.bsize);
    r.r.u64();
    expect(r.r.u64()).toBe(real.blocks);
  });
});

describe('confinement', () => {
  it('refuses .. and absolute paths outside the root', async () => {
    const c = await start();
    for (const p of ['..', '../outside/secret', `${outside}/secret`, '/etc/passwd', `${root}/../outside/secret`]) {
      expectStatus(await c.path(FXP.STAT, p), FX.PERMISSION_DENIED);
      expectStatus(await c.open(p, FXF.READ), FX.PERMISSION_DENIED);
    }
    expectStatus(await c.path(FXP.OPENDIR, '/'), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.REALPATH, '..'), FX.PERMISSION_DENIED);
    expectStatus(await c.open('../outside/new', FXF.WRITE | FXF.CREAT), FX.PERMISSION_DENIED);
    expect(await exists(join(outside, 'new'))).toBe(false);
  });

  it('lets the guest create a symlink to /etc but never follows it', async () => {
    const c = await start();
    expectStatus(await c.request(FXP.SYMLINK, (w) => w.string('/etc').string('etc')), FX.OK);
    expectStatus(await c.open('etc/passwd', FXF.READ), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.OPENDIR, 'etc'), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.STAT, 'etc'), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.REALPATH, 'etc'), FX.PERMISSION_DENIED);
    expectStatus(await c.extended(EXT.STATVFS, (w) => w.string('etc/passwd')), FX.PERMISSION_DENIED);
    // The link itself stays manageable.
    expect(await c.names(c.path(FXP.READLINK, 'etc'))).toEqual(['/etc']);
    expect(attrsOf(await c.path(FXP.LSTAT, 'etc')).mode & 0o170000).toBe(0o120000);
    expectStatus(await c.path(FXP.REMOVE, 'etc'), FX.OK);
  });

  it('answers the marker touch of a link that points outside, and sets real times on the link, never through it', async () => {
    await fsp.symlink(join(outside, 'secret'), join(root, 'esc'));
    const before = (await fsp.stat(join(outside, 'secret'))).mtimeMs;
    const c = await start();
    const touch = (at: number, mt: number) => (w: PacketWriter) => w.string('esc').u32(ATTR.ACMODTIME).u32(at).u32(mt);
    expectStatus(await c.request(FXP.SETSTAT, touch(MARKER_TOUCH.atime, MARKER_TOUCH.mtime)), FX.OK);
    // sshfs sends SETSTAT for the link's own times (lutimes: touch -h, tar): they land on the link.
    expectStatus(await c.request(FXP.SETSTAT, touch(1_000_000_000, 1_000_000_000)), FX.OK);
    expect((await fsp.lstat(join(root, 'esc'))).mtimeMs).toBe(1_000_000_000_000);
    expect((await fsp.stat(join(outside, 'secret'))).mtimeMs).toBe(before);
  });

  it('sets the times of a dangling link on the link, as tar restoring node_modules/.bin does', async () => {
    await fsp.symlink('../lib/missing.js', join(root, 'bin-link'));
    const c = await start();
    const touch = (w: PacketWriter) => w.string('bin-link').u32(ATTR.ACMODTIME).u32(1_000_000_000).u32(1_000_000_000);
    expectStatus(await c.request(FXP.SETSTAT, touch), FX.OK);
    expect((await fsp.lstat(join(root, 'bin-link'))).mtimeMs).toBe(1_000_000_000_000);
    const chmod = (w: PacketWriter) => w.string('bin-link').u32(ATTR.PERMISSIONS).u32(0o600);
    expectStatus(await c.request(FXP.SETSTAT, chmod), FX.OP_UNSUPPORTED);
  });

  it('refuses to create a file through a dangling link that points outside', async () => {
    await fsp.symlink(join(outside, 'created'), join(root, 'dangling'));
    const c = await start();
    expectStatus(await c.open('dangling', FXF.WRITE | FXF.CREAT), FX.PERMISSION_DENIED);
    expect(await exists(join(outside, 'created'))).toBe(false);
  });

  it('refuses paths through a directory link that leads outside, including for link-level ops', async () => {
    await fsp.symlink(outside, join(root, 'out'));
    const c = await start();
    expectStatus(await c.path(FXP.LSTAT, 'out/secret'), FX.PERMISSION_DENIED);
    expectStatus(await c.path(FXP.REMOVE, 'out/secret'), FX.PERMISSION_DENIED);
    expectStatus(await c.request(FXP.RENAME, (w) => w.string('out/secret').string('stolen')), FX.PERMISSION_DENIED);
    expectStatus(await c.extended(EXT.HARDLINK, (w) => w.string('out/secret').string('stolen')), FX.PERMISSION_DENIED);
    expectStatus(await c.request(FXP.SYMLINK, (w) => w.string('x').string('out/evil')), FX.PERMISSION_DENIED);
    expect(await exists(join(outside, 'secret'))).toBe(true);
    expect(await exists(join(outside, 'evil'))).toBe(false);
  });

  it('follows links that stay inside the root, relative and absolute', async () => {
    await fsp.mkdir(join(root, 'sub'));
    await fsp.writeFile(join(root, 'sub', 'f'), 'F');
    await fsp.symlink('sub', join(root, 'rel'));
    await fsp.symlink(join(root, 'sub', 'f'), join(root, 'abs'));
    await fsp.symlink('../sub/f', join(root, 'sub', 'up'));
    const c = await start();
    expect(attrsOf(await c.path(FXP.STAT, 'rel/f')).size).toBe(1);
    expect(attrsOf(await c.path(FXP.STAT, 'abs')).size).toBe(1);
    expect(attrsOf(await c.path(FXP.STAT, 'sub/up')).size).toBe(1);
  });
});

describe('read-only mode', () => {
  it('refuses every mutating request and leaves the tree unchanged', async () => {
    await fsp.writeFile(join(root, 'f'), 'F');
    await fsp.mkdir(join(root, 'd'));
    const c = await start({ readOnly: true });
    const rh = await c.handle(c.open('f', FXF.READ));
    const denied: Promise<Reply>[] = [
      c.open('new', FXF.WRITE | FXF.CREAT),
      c.open('f', FXF.WRITE),
      c.open('f', FXF.READ | FXF.TRUNC),
      c.open('f', FXF.READ | FXF.APPEND),
      c.write(rh, 0, Buffer.from('x')),
      c.request(FXP.SETSTAT, (w) => w.string('f').u32(ATTR.PERMISSIONS).u32(0o777)),
      c.request(FXP.FSETSTAT, (w) => w.bytes(rh).u32(ATTR.SIZE).u64(0)),
      c.path(FXP.REMOVE, 'f'),
      c.request(FXP.MKDIR, (w) => w.string('m').u32(0)),
      c.path(FXP.RMDIR, 'd'),
      c.request(FXP.RENAME, (w) => w.string('f').string('g')),
      c.request(FXP.SYMLINK, (w) => w.string('f').string('l')),
      c.extended(EXT.POSIX_RENAME, (w) => w.string('f').string('g')),
      c.extended(EXT.HARDLINK, (w) => w.string('f').string('h')),
      c.extended(EXT.LSETSTAT, (w) => w.string('f').u32(ATTR.PERMISSIONS).u32(0o777)),
    ];
    for (const r of await Promise.all(denied)) expectStatus(r, FX.PERMISSION_DENIED, /read-only/);
    expectStatus(await c.extended(EXT.FSYNC, (w) => w.bytes(rh)), FX.OK);
    expect((await fsp.readdir(root)).sort()).toEqual(['d', 'f']);
    expect(await fsp.readFile(join(root, 'f'), 'utf8')).toBe('F');
    expect((await fsp.stat(join(root, 'f'))).mode & 0o777).not.toBe(0o777);
    const vfs = await c.extended(EXT.STATVFS, (w) => w.string('.'));
    for (let i = 0; i < 9; i++) vfs.r.u64();
    expect(vfs.r.u64() & 1).toBe(1);
  });

  it("answers the guest applier's marker touch with OK and changes nothing; other times stay refused", async () => {
    await fsp.writeFile(join(root, 'f'), 'F');
    const before = (await fsp.stat(join(root, 'f'))).mtimeMs;
    const c = await start({ readOnly: true });
    const touch = (at: number, mt: number) => (w: PacketWriter) => w.string('f').u32(ATTR.ACMODTIME).u32(at).u32(mt);
    const { atime, mtime } = MARKER_TOUCH;
    expectStatus(await c.request(FXP.SETSTAT, touch(atime, mtime)), FX.OK);
    expectStatus(await c.extended(EXT.LSETSTAT, touch(atime, mtime)), FX.OK);
    expectStatus(await c.request(FXP.SETSTAT, touch(1_000_000_000, 1_000_000_000)), FX.PERMISSION_DENIED, /read-only/);
    // `touch -d` sets both times alike: never the marker.
    expectStatus(await c.request(FXP.SETSTAT, touch(mtime, mtime)), FX.PERMISSION_DENIED, /read-only/);
    // The marker with anything else in it is no marker.
    const markerAndMode = (w: PacketWriter) =>
      w
        .string('f')
        .u32(ATTR.ACMODTIME | ATTR.PERMISSIONS)
        .u32(0o600)
        .u32(MARKER_TOUCH.atime)
        .u32(MARKER_TOUCH.mtime);
    expectStatus(await c.request(FXP.SETSTAT, markerAndMode), FX.PERMISSION_DENIED, /read-only/);
    expect((await fsp.stat(join(root, 'f'))).mtimeMs).toBe(before);
  });
});

describe('writable mode', () => {
  it("leaves the host file's times alone on the marker touch", async () => {
    await fsp.writeFile(join(root, 'f'), 'F');
    const before = (await fsp.stat(join(root, 'f'))).mtimeMs;
    const c = await start();
    const touch = (w: PacketWriter) =>
      w.string('f').u32(ATTR.ACMODTIME).u32(MARKER_TOUCH.atime).u32(MARKER_TOUCH.mtime);
    expectStatus(await c.request(FXP.SETSTAT, touch), FX.OK);
    expect((await fsp.stat(join(root, 'f'))).mtimeMs).toBe(before);
  });
});

describe('bad input', () => {
  it('answers a truncated request with BAD_MESSAGE and keeps serving', async () => {
    const c = await start();
    // OPEN whose path string claims 100 bytes but carries 3.
    expectStatus(await c.request(FXP.OPEN, (w) => w.u32(100).u8(1).u8(2).u8(3)), FX.BAD_MESSAGE);
    expectStatus(await c.request(FXP.READ, (w) => w.u32(4)), FX.BAD_MESSAGE);
    expectStatus(await c.request(FXP.EXTENDED, (w) => w.u32(50)), FX.BAD_MESSAGE);
    expect(await c.names(c.path(FXP.REALPATH, '.'))).toEqual([root]);
  });

  it('answers unknown requests and extensions with OP_UNSUPPORTED', async () => {
    const c = await start();
    expectStatus(await c.request(99, () => {}), FX.OP_UNSUPPORTED);
    expectStatus(await c.extended('nope@example.com'), FX.OP_UNSUPPORTED);
  });

  it('rejects unknown and foreign handles', async () => {
    const c = await start();
    expectStatus(await c.read(Buffer.from('zz'), 0, 1), FX.FAILURE, /invalid handle/);
    const dh = await c.handle(c.path(FXP.OPENDIR, '.'));
    expectStatus(await c.read(dh, 0, 1), FX.FAILURE, /directory/);
    expectStatus(await c.close(dh), FX.OK);
    expectStatus(await c.close(dh), FX.FAILURE, /invalid handle/);
  });

  it('closes the session on an absurd packet length', async () => {
    const c = await start();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(0x7fffffff);
    c.toServer.write(header);
    expect((await c.closed).reason).toMatch(/packet length 2147483647/);
  });

  it('closes the session on a packet too short for a request id', async () => {
    const c = await start();
    c.toServer.write(Buffer.from([0, 0, 0, 2, FXP.STAT, 0]));
    expect((await c.closed).reason).toMatch(/too short/);
  });

  it('closes the session on a request before INIT', async () => {
    client = new RawClient({ root });
    client.toServer.write(new PacketWriter(FXP.STAT).u32(1).string('.').finish());
    expect((await client.closed).reason).toMatch(/before SSH_FXP_INIT/);
  });

  it('handles a request split into single bytes', async () => {
    const c = await start();
    const packet = new PacketWriter(FXP.REALPATH).u32(4242).string('.').finish();
    const reply = new Promise<Reply>((resolve) => {
      (c as unknown as { waiting: Map<number, (r: Reply) => void> }).waiting.set(4242, resolve);
    });
    for (const b of packet) c.toServer.write(Buffer.from([b]));
    expect(await c.names(reply)).toEqual([root]);
  });
});

describe('handles', () => {
  it('refuses handles beyond the limit and recovers after a close', async () => {
    await fsp.writeFile(join(root, 'f'), 'F');
    const c = await start({ maxHandles: 3 });
    const hs = [await c.handle(c.open('f', FXF.READ)), await c.handle(c.open('f', FXF.READ))];
    hs.push(await c.handle(c.path(FXP.OPENDIR, '.')));
    expectStatus(await c.open('f', FXF.READ), FX.FAILURE, /too many open handles/);
    expectStatus(await c.path(FXP.OPENDIR, '.'), FX.FAILURE, /too many open handles/);
    expectStatus(await c.close(hs[0]), FX.OK);
    await c.handle(c.open('f', FXF.READ));
  });

  it('releases every handle when the session closes', async () => {
    await fsp.writeFile(join(root, 'f'), 'F');
    const c = await start();
    for (let i = 0; i < 5; i++) await c.handle(c.open('f', FXF.READ));
    expect(c.session.stats.openHandles).toBe(5);
    c.toServer.end();
    expect((await c.closed).reason).toMatch(/client closed/);
    expect(c.session.stats.openHandles).toBe(0);
  });

  it('takes a client that goes away without ending its stream as a disconnect, not a stream error', async () => {
    const c = await start();
    c.toServer.destroy(); // the composed stream reports ERR_STREAM_PREMATURE_CLOSE
    expect((await c.closed).reason).toBe('client closed the stream');
  });
});
