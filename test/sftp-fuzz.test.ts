// Fuzzing the builtin SFTP server (serveSftp) over an in-memory stream: valid request templates of every type,
// mutated (flipped bytes, truncated or padded bodies, wrong length headers) and pure garbage, thousands of packets
// against a writable export that sits next to an "outside" directory with a canary, symlinks that lead out and a
// sibling whose name starts with the export's. The server must never throw, must answer every request it can frame
// (or close the session with a reason), and nothing outside the export may change; in read-only mode nothing inside
// may change either. The seed is printed; SFTP_FUZZ_SEED=<n> replays a run.
import { createHash } from 'node:crypto';
import { promises as fsp, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTR, EXT, FX, FXF, FXP } from '../host/src/sftp/constants.js';
import { PacketReader, PacketWriter, SftpPacketSplitter } from '../host/src/sftp/packet.js';
import { type SftpLogger, serveSftp } from '../host/src/sftp/server.js';

const SEED = Number(process.env.SFTP_FUZZ_SEED) || Date.now() % 0x7fff_ffff;
const SESSIONS = 60;
const PACKETS_PER_SESSION = 80;
const GARBAGE_SESSIONS = 300;
const CLOSE_DEADLINE_MS = 10_000;
const BIG_FILE = 16 * 1024 * 1024;
const REPLY_TYPES = new Set<number>([
  FXP.VERSION,
  FXP.STATUS,
  FXP.HANDLE,
  FXP.DATA,
  FXP.NAME,
  FXP.ATTRS,
  FXP.EXTENDED_REPLY,
]);

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)],
    chance: (p: number) => next() < p,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(256))),
    u32: () => int(0x1_0000_0000),
  };
}
type Rng = ReturnType<typeof prng>;

// ── the filesystem under test ──────────────────────────────────────────────────────────────────────────────────

let base: string;
let exportDir: string;
let outsideDir: string;
let canary: string;

async function buildTree(): Promise<void> {
  base = await fsp.mkdtemp(join(tmpdir(), 'tether-sftp-fuzz-'));
  exportDir = join(base, 'export');
  outsideDir = join(base, 'outside');
  canary = join(outsideDir, 'canary');
  await fsp.mkdir(join(exportDir, 'dir', 'sub'), { recursive: true });
  await fsp.mkdir(join(exportDir, 'empty'));
  await fsp.mkdir(outsideDir);
  await fsp.mkdir(join(base, 'export-evil')); // shares the export's name as a prefix
  await fsp.writeFile(canary, 'canary: must never change');
  await fsp.writeFile(join(base, 'export-evil', 'canary'), 'prefix canary');
  await fsp.writeFile(join(exportDir, 'a.txt'), 'hello from the export\n');
  await fsp.writeFile(join(exportDir, 'dir', 'b.txt'), Buffer.alloc(300_000, 7));
  await fsp.symlink('../outside', join(exportDir, 'out-dir'));
  await fsp.symlink('../outside/canary', join(exportDir, 'out-canary'));
  await fsp.symlink(canary, join(exportDir, 'abs-canary'));
  await fsp.symlink('/etc/passwd', join(exportDir, 'abs-passwd'));
  await fsp.symlink('../export-evil/canary', join(exportDir, 'prefix-link'));
  await fsp.symlink('loop', join(exportDir, 'loop'));
  await fsp.symlink('a.txt', join(exportDir, 'inner'));
  await fsp.symlink('dir/../out-dir/canary', join(exportDir, 'chain'));
}

/** A digest of every entry under `dir` (type, mode, owner, size, mtime, content or link target), `skip` excluded. */
function treeDigest(dir: string, skip: string | null): string {
  const h = createHash('sha256');
  const walk = (p: string) => {
    for (const name of readdirSync(p).sort()) {
      const full = join(p, name);
      if (full === skip) continue;
      const st = lstatSync(full);
      h.update(`${full}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeMs}\0`);
      if (st.isSymbolicLink()) h.update(readlinkSync(full));
      // Fuzzed writes at huge offsets leave big sparse files: their size and mtime stand for their content.
      else if (st.isFile() && st.size <= BIG_FILE) h.update(readFileSync(full));
      else if (st.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return h.digest('hex');
}

function outsideState() {
  const passwd = lstatSync('/etc/passwd');
  return {
    tree: treeDigest(base, exportDir),
    canary: readFileSync(canary, 'utf8'),
    canaryMtime: lstatSync(canary).mtimeMs,
    passwd: `${passwd.size}/${passwd.mtimeMs}/${createHash('sha256').update(readFileSync('/etc/passwd')).digest('hex')}`,
  };
}

// ── packets ────────────────────────────────────────────────────────────────────────────────────────────────────

function paths(): string[] {
  return [
    'a.txt',
    'dir/b.txt',
    'dir',
    'dir/sub',
    'empty',
    '.',
    '',
    '/',
    '..',
    '../outside',
    '../outside/canary',
    '../export-evil/canary',
    `${base}/export-evil/canary`,
    '/etc/passwd',
    '/etc',
    '/proc/self/root/etc/passwd',
    exportDir,
    `${exportDir}/a.txt`,
    `${exportDir}/../outside/canary`,
    `${exportDir}/dir/../../outside`,
    canary,
    'out-dir',
    'out-dir/canary',
    'out-canary',
    'abs-canary',
    'abs-passwd',
    'prefix-link',
    'chain',
    'loop',
    'inner',
    'dir/../../outside/canary',
    'new-file',
    'new-dir',
    'dir/new',
    'a.txt/x',
    'nul\0byte',
    'x'.repeat(5000),
    '//..//..//etc/passwd',
    'dir/./sub/../../..',
  ];
}

const EXTENSIONS = [...Object.values(EXT), 'copy-data', 'expand-path@openssh.com', 'no-such@example.com'];

class Generator {
  private readonly paths = paths();
  constructor(
    private readonly rng: Rng,
    private readonly handles: Buffer[],
  ) {}

  path(): string {
    const { rng } = this;
    if (rng.chance(0.1)) return `f${rng.int(20)}`;
    if (rng.chance(0.05)) return rng.bytes(rng.int(40)).toString('latin1');
    return rng.pick(this.paths);
  }

  handle(): Buffer {
    const { rng } = this;
    if (this.handles.length > 0 && rng.chance(0.8)) return rng.pick(this.handles);
    return rng.bytes(rng.pick([0, 1, 4, 4, 8, 300]));
  }

  u64(): number | bigint {
    const { rng } = this;
    return rng.pick<number | bigint>([0, 1, rng.int(1 << 20), rng.u32(), 2 ** 40, 2n ** 63n, 2n ** 64n - 1n]);
  }

  attrs(w: PacketWriter): void {
    const { rng } = this;
    const flags = rng.chance(0.1) ? rng.u32() : rng.int(16) | (rng.chance(0.1) ? ATTR.EXTENDED : 0);
    w.u32(flags);
    if (flags & ATTR.SIZE) w.u64(rng.pick<number | bigint>([0, 5, rng.int(1 << 20), 2n ** 62n]));
    if (flags & ATTR.UIDGID) w.u32(rng.pick([0, 65534, rng.u32()])).u32(rng.pick([0, 65534, rng.u32()]));
    if (flags & ATTR.PERMISSIONS) w.u32(rng.pick([0, 0o644, 0o4777, rng.u32()]));
    if (flags & ATTR.ACMODTIME) w.u32(rng.u32()).u32(rng.u32());
    if (flags & ATTR.EXTENDED) {
      const n = rng.pick([0, 1, 2, 0xffff_ffff]);
      w.u32(n);
      for (let i = 0; i < Math.min(n, 2); i++) w.string('k').string('v');
    }
  }

  /** One request body (type byte onwards, no length prefix) with the given id. */
  request(id: number): Buffer {
    const { rng } = this;
    const type = rng.chance(0.03) ? rng.int(256) : rng.pick(REQUEST_TYPES);
    const w = new PacketWriter(type, 64).u32(id);
    let tail: Buffer | null = null;
    switch (type) {
      case FXP.OPEN:
        w.string(this.path()).u32(rng.chance(0.8) ? rng.int(64) : rng.u32());
        this.attrs(w);
        break;
      case FXP.CLOSE:
      case FXP.FSTAT:
      case FXP.READDIR:
        w.bytes(this.handle());
        break;
      case FXP.READ:
        w.bytes(this.handle())
          .u64(this.u64())
          .u32(rng.pick([0, 1, 4096, 65536, rng.u32()]));
        break;
      case FXP.WRITE:
        w.bytes(this.handle())
          .u64(rng.chance(0.8) ? rng.int(1 << 16) : this.u64())
          .bytes(rng.bytes(rng.int(2048)));
        break;
      case FXP.FSETSTAT:
        w.bytes(this.handle());
        this.attrs(w);
        break;
      case FXP.SETSTAT:
      case FXP.MKDIR:
        w.string(this.path());
        this.attrs(w);
        break;
      case FXP.RENAME:
      case FXP.SYMLINK:
        w.string(this.path()).string(this.path());
        break;
      case FXP.EXTENDED:
        this.extended(w);
        break;
      default:
        if (REQUEST_TYPES.includes(type))
          w.string(this.path()); // LSTAT, STAT, OPENDIR, REMOVE, RMDIR, ...
        else tail = rng.bytes(rng.int(32));
    }
    const packet = w.finish().subarray(4);
    return tail ? Buffer.concat([packet, tail]) : packet;
  }

  private extended(w: PacketWriter): void {
    const name = this.rng.pick(EXTENSIONS);
    w.string(name);
    if (name === EXT.POSIX_RENAME || name === EXT.HARDLINK) w.string(this.path()).string(this.path());
    else if (name === EXT.STATVFS) w.string(this.path());
    else if (name === EXT.FSTATVFS || name === EXT.FSYNC) w.bytes(this.handle());
    else if (name === EXT.LSETSTAT) {
      w.string(this.path());
      this.attrs(w);
    }
  }
}

const REQUEST_TYPES: number[] = [
  FXP.OPEN,
  FXP.CLOSE,
  FXP.READ,
  FXP.WRITE,
  FXP.LSTAT,
  FXP.FSTAT,
  FXP.SETSTAT,
  FXP.FSETSTAT,
  FXP.OPENDIR,
  FXP.READDIR,
  FXP.REMOVE,
  FXP.MKDIR,
  FXP.RMDIR,
  FXP.REALPATH,
  FXP.STAT,
  FXP.RENAME,
  FXP.READLINK,
  FXP.SYMLINK,
  FXP.EXTENDED,
];

function frame(body: Buffer, length = body.length): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(length >>> 0);
  return Buffer.concat([h, body]);
}

interface Mutated {
  bytes: Buffer;
  /** The server can still split the stream into packets after this one. */
  framed: boolean;
  /** The request id the server will read, when it will answer one. */
  answerable: number | null;
}

/** Flipped bytes, a truncated or padded body, or nothing; the length header always matches the body. */
function mutate(rng: Rng, body: Buffer): Mutated {
  const roll = rng.next();
  let b = Buffer.from(body);
  if (roll < 0.4) {
    // unchanged
  } else if (roll < 0.75) {
    for (let n = 1 + rng.int(4); n > 0; n--) b[rng.int(b.length)] = rng.int(256);
  } else if (roll < 0.9) {
    b = b.subarray(0, Math.min(b.length, 5 + rng.int(b.length)));
  } else {
    b = Buffer.concat([b, rng.bytes(1 + rng.int(64))]);
  }
  const answerable = b[0] !== FXP.INIT ? b.readUInt32BE(1) : null;
  return { bytes: frame(b), framed: true, answerable };
}

/** A packet after which the server cannot (or must not) go on: a lying length header, or no room for an id. */
function breakFraming(rng: Rng, body: Buffer): Mutated {
  const lie = rng.pick([0, body.length + 1 + rng.int(100), Math.max(1, body.length - 1 - rng.int(4)), rng.u32()]);
  if (rng.chance(0.2)) return { bytes: frame(body.subarray(0, 1 + rng.int(4))), framed: false, answerable: null };
  return { bytes: frame(body, lie), framed: false, answerable: null };
}

// ── a session ──────────────────────────────────────────────────────────────────────────────────────────────────

/** Reply types seen across all sessions, to show the fuzz reaches the handlers and not just the parser. */
const replyTypes = new Map<number, number>();

interface Outcome {
  replies: Map<number, number>;
  closeReason: string;
  malformedReplies: string[];
  warnings: string[];
}

class FuzzSession {
  readonly toServer = new PassThrough();
  readonly fromServer = new PassThrough();
  readonly replies = new Map<number, number>();
  /** The last reply per request id. */
  readonly packets = new Map<number, Buffer>();
  readonly malformed: string[] = [];
  readonly warnings: string[] = [];
  readonly handles: Buffer[] = [];
  readonly closed: Promise<string>;
  private readonly waiters = new Map<number, () => void>();
  private versionSeen: (() => void) | null = null;

  constructor(readOnly: boolean) {
    const log: SftpLogger = {
      debug() {},
      info() {},
      warn: (_o, msg) => this.warnings.push(msg),
      error: (_o, msg) => this.warnings.push(msg),
    };
    const session = serveSftp(Duplex.from({ readable: this.toServer, writable: this.fromServer }), {
      root: exportDir,
      readOnly,
      maxHandles: 64,
      log,
    });
    this.closed = new Promise((resolve) => session.once('close', (e: { reason: string }) => resolve(e.reason)));
    const decoder = new SftpPacketSplitter(1 << 24);
    this.fromServer.on('data', (chunk: Buffer) => {
      for (const p of decoder.push(chunk)) this.onReply(p);
    });
  }

  private onReply(p: Buffer): void {
    const type = p[0];
    if (!REPLY_TYPES.has(type)) {
      this.malformed.push(`reply type ${type}`);
      return;
    }
    if (type === FXP.VERSION) {
      this.versionSeen?.();
      return;
    }
    if (p.length < 5) {
      this.malformed.push(`reply of ${p.length} bytes`);
      return;
    }
    const r = new PacketReader(p.subarray(5));
    const id = p.readUInt32BE(1);
    replyTypes.set(type, (replyTypes.get(type) ?? 0) + 1);
    try {
      if (type === FXP.STATUS) {
        r.u32();
        r.string();
      }
      if (type === FXP.HANDLE) this.handles.push(Buffer.from(r.bytes()));
    } catch (err) {
      this.malformed.push(`${type}: ${(err as Error).message}`);
    }
    this.replies.set(id, (this.replies.get(id) ?? 0) + 1);
    this.packets.set(id, p);
    this.waiters.get(id)?.();
  }

  init(): Promise<void> {
    const seen = new Promise<void>((resolve) => {
      this.versionSeen = resolve;
    });
    this.toServer.write(frame(Buffer.from([FXP.INIT, 0, 0, 0, 3])));
    return seen;
  }

  /** Sends a well-formed request and resolves with its answer (type byte onwards). */
  async ask(body: Buffer): Promise<Buffer> {
    const id = body.readUInt32BE(1);
    const answered = new Promise<void>((resolve) => this.waiters.set(id, resolve));
    this.toServer.write(frame(body));
    await answered;
    this.waiters.delete(id);
    return this.packets.get(id)!;
  }

  async finish(): Promise<Outcome> {
    this.toServer.end();
    const reason = await Promise.race([
      this.closed,
      new Promise<string>((resolve) => setTimeout(() => resolve(''), CLOSE_DEADLINE_MS).unref()),
    ]);
    return { replies: this.replies, closeReason: reason, malformedReplies: this.malformed, warnings: this.warnings };
  }
}

function openBody(id: number, path: string, pflags: number): Buffer {
  return new PacketWriter(FXP.OPEN).u32(id).string(path).u32(pflags).u32(0).finish().subarray(4);
}

function pathBody(type: number, id: number, path: string): Buffer {
  return new PacketWriter(type).u32(id).string(path).finish().subarray(4);
}

/** One fuzz session: real handles first, then a burst of generated and mutated packets, then EOF. */
async function fuzzSession(rng: Rng, readOnly: boolean): Promise<{ outcome: Outcome; sent: number }> {
  const s = new FuzzSession(readOnly);
  await s.init();
  let id = 1;
  await s.ask(openBody(id++, 'a.txt', readOnly ? FXF.READ : FXF.READ | FXF.WRITE));
  await s.ask(openBody(id++, 'dir/b.txt', FXF.READ));
  await s.ask(pathBody(FXP.OPENDIR, id++, 'dir'));
  if (!readOnly) await s.ask(openBody(id++, `f${rng.int(20)}`, FXF.WRITE | FXF.CREAT));
  const gen = new Generator(rng, s.handles);
  // The setup requests were answered once each; a mutated id may repeat one of them.
  const expected = new Map<number, number>(Array.from({ length: id - 1 }, (_, i) => [i + 1, 1]));
  let framed = true;
  let sent = 0;
  // A third of the sessions lose their framing somewhere; the rest stay in step to the end.
  const breakAt = rng.chance(0.33) ? rng.int(PACKETS_PER_SESSION) : -1;
  for (let i = 0; i < PACKETS_PER_SESSION; i++) {
    const request = gen.request(0x1000 + i);
    const m = i === breakAt ? breakFraming(rng, request) : mutate(rng, request);
    s.toServer.write(m.bytes);
    sent++;
    if (!m.framed) framed = false;
    if (framed && m.answerable !== null) expected.set(m.answerable, (expected.get(m.answerable) ?? 0) + 1);
  }
  const outcome = await s.finish();
  expect(outcome.closeReason, `session did not close within ${CLOSE_DEADLINE_MS} ms (seed ${SEED})`).not.toBe('');
  expect(outcome.malformedReplies, `seed ${SEED}`).toEqual([]);
  if (framed && outcome.closeReason === 'client closed the stream') {
    // Every request the server could frame got exactly one answer.
    for (const [rid, n] of expected)
      expect(outcome.replies.get(rid) ?? 0, `replies to id ${rid} (seed ${SEED})`).toBe(n);
  }
  return { outcome, sent };
}

// ── tests ──────────────────────────────────────────────────────────────────────────────────────────────────────

describe('builtin SFTP server under fuzzing', () => {
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  let before: ReturnType<typeof outsideState>;

  beforeAll(async () => {
    console.log(`sftp fuzz seed ${SEED} (replay with SFTP_FUZZ_SEED=${SEED})`);
    await buildTree();
    before = outsideState();
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
  });

  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    if (base) await fsp.rm(base, { recursive: true, force: true });
  });

  it('refuses every way out of the export (dot-dot, absolute paths, symlinks, a prefix sibling)', async () => {
    const s = new FuzzSession(false);
    await s.init();
    let id = 1;
    const replies: { what: string; type: number; code: number | null }[] = [];
    const attempt = async (what: string, body: Buffer) => {
      const p = await s.ask(body);
      replies.push({ what, type: p[0], code: p[0] === FXP.STATUS ? p.readUInt32BE(5) : null });
    };
    const w = (type: number) => new PacketWriter(type).u32(id++);
    const body = (pw: PacketWriter) => pw.finish().subarray(4);
    const escapes = [
      '../outside/canary',
      `${exportDir}/../outside/canary`,
      canary,
      'out-canary',
      'abs-canary',
      'chain',
      'out-dir/canary',
      'prefix-link',
      '../export-evil/canary',
      `${base}/export-evil/canary`,
      '//..//..//etc/passwd',
      'abs-passwd',
      '/proc/self/root/etc/passwd',
    ];
    for (const p of escapes) {
      await attempt(
        `open ${p} for writing`,
        body(
          w(FXP.OPEN)
            .string(p)
            .u32(FXF.WRITE | FXF.TRUNC)
            .u32(0),
        ),
      );
      await attempt(`open ${p} for reading`, body(w(FXP.OPEN).string(p).u32(FXF.READ).u32(0)));
      await attempt(`setstat ${p}`, body(w(FXP.SETSTAT).string(p).u32(ATTR.PERMISSIONS).u32(0)));
      await attempt(`stat ${p}`, body(w(FXP.STAT).string(p)));
      await attempt(`realpath ${p}`, body(w(FXP.REALPATH).string(p)));
      await attempt(`statvfs ${p}`, body(w(FXP.EXTENDED).string(EXT.STATVFS).string(p)));
    }
    for (const p of ['out-dir', '../outside', '/etc', `${base}/export-evil`, '/']) {
      await attempt(`opendir ${p}`, body(w(FXP.OPENDIR).string(p)));
    }
    await attempt('remove the canary', body(w(FXP.REMOVE).string('../outside/canary')));
    await attempt('mkdir outside', body(w(FXP.MKDIR).string('../outside/new').u32(0)));
    await attempt('rename into outside', body(w(FXP.RENAME).string('a.txt').string('../outside/stolen')));
    await attempt(
      'posix-rename the canary in',
      body(w(FXP.EXTENDED).string(EXT.POSIX_RENAME).string('../outside/canary').string('stolen')),
    );
    await attempt(
      'hardlink the canary in',
      body(w(FXP.EXTENDED).string(EXT.HARDLINK).string('../outside/canary').string('hl')),
    );
    await attempt('symlink outside', body(w(FXP.SYMLINK).string('x').string('../outside/new-link')));
    // A link to the outside may be created (the guest resolves it in its own namespace) but never followed here.
    await attempt('create a link to the canary', body(w(FXP.SYMLINK).string(canary).string('evil')));
    expect(replies.pop()).toMatchObject({ type: FXP.STATUS, code: FX.OK });
    await attempt(
      'write through the new link',
      body(
        w(FXP.OPEN)
          .string('evil')
          .u32(FXF.WRITE | FXF.TRUNC)
          .u32(0),
      ),
    );
    await attempt(
      'create through a link to a missing outside file',
      body(w(FXP.SYMLINK).string('../outside/created-through-link').string('evil2')),
    );
    expect(replies.pop()).toMatchObject({ type: FXP.STATUS, code: FX.OK });
    await attempt(
      'O_CREAT through it',
      body(
        w(FXP.OPEN)
          .string('evil2')
          .u32(FXF.WRITE | FXF.CREAT)
          .u32(0),
      ),
    );

    const leaks = replies.filter((r) => r.type !== FXP.STATUS || r.code === FX.OK);
    expect(leaks, `requests that succeeded outside the export (seed ${SEED})`).toEqual([]);
    const denied = replies.filter((r) => r.code === FX.PERMISSION_DENIED).length;
    expect(denied).toBeGreaterThan(replies.length / 2);
    expect(await s.finish()).toMatchObject({ closeReason: 'client closed the stream', malformedReplies: [] });
    expect(outsideState()).toEqual(before);
  });

  it('changes nothing at all in read-only mode, whatever the requests', async () => {
    const rng = prng(SEED ^ 0x5a5a5a5a);
    const inside = treeDigest(exportDir, null);
    for (let i = 0; i < SESSIONS / 2; i++) await fuzzSession(rng, true);
    expect(treeDigest(exportDir, null), `read-only export changed (seed ${SEED})`).toBe(inside);
    expect(outsideState()).toEqual(before);
    expect(uncaught).toEqual([]);
  });

  it(`survives ${SESSIONS} sessions of ${PACKETS_PER_SESSION} generated and mutated requests, writable`, async () => {
    const rng = prng(SEED);
    let sent = 0;
    const reasons = new Set<string>();
    for (let i = 0; i < SESSIONS; i++) {
      const r = await fuzzSession(rng, false);
      sent += r.sent;
      reasons.add(r.outcome.closeReason.replace(/\d+/g, 'N'));
    }
    expect(sent).toBe(SESSIONS * PACKETS_PER_SESSION);
    expect(reasons.size).toBeGreaterThan(1); // some sessions ended on a framing error, with its reason
    for (const type of [FXP.STATUS, FXP.HANDLE, FXP.DATA, FXP.NAME, FXP.ATTRS, FXP.EXTENDED_REPLY]) {
      expect(replyTypes.get(type) ?? 0, `replies of type ${type}`).toBeGreaterThan(0);
    }
    expect(uncaught).toEqual([]);
    expect(outsideState(), `outside the export changed (seed ${SEED})`).toEqual(before);
  });

  it(`survives ${GARBAGE_SESSIONS} sessions of random bytes, with or without INIT`, async () => {
    const rng = prng(SEED ^ 0x1234567);
    for (let i = 0; i < GARBAGE_SESSIONS; i++) {
      const s = new FuzzSession(false);
      if (rng.chance(0.5)) await s.init();
      for (let n = 1 + rng.int(8); n > 0; n--) {
        const garbage = rng.bytes(1 + rng.int(512));
        // Often a plausible small length, so the garbage reaches the request parser instead of the framing check.
        if (garbage.length >= 4 && rng.chance(0.7)) garbage.writeUInt32BE(Math.max(0, garbage.length - 4), 0);
        s.toServer.write(garbage);
      }
      const outcome = await s.finish();
      expect(outcome.closeReason, `garbage session ${i} did not close (seed ${SEED})`).not.toBe('');
      expect(outcome.malformedReplies).toEqual([]);
    }
    expect(uncaught).toEqual([]);
    expect(outsideState()).toEqual(before);
  });
});
