// The builtin SFTP server's request handlers: one function per SFTP v3 request and OpenSSH extension, and the tables
// that map request types and extension names to them with how each may be ordered (concurrent, waits, mutates).
// Each handler runs against an OpContext (the confined paths, the handle table, read-only mode, the counters) and
// returns its reply packet; the session in server.ts owns framing, ordering and flow control. The design notes in
// server.ts (synchronous calls, O_NONBLOCK opens, error codes as OpenSSH's) apply here.

import {
  type BigIntStatsFs,
  constants as C,
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsync,
  ftruncateSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  opendirSync,
  openSync,
  readlinkSync,
  readSync,
  renameSync,
  rmdirSync,
  type Stats,
  statfsSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { isMarkerTouch, longname, type RequestedAttrs, readAttrs, writeEmptyAttrs, writeStats } from './attrs.js';
import {
  EXT,
  FX,
  FXF,
  FXP,
  MAX_PACKET_LENGTH,
  MAX_READ_LENGTH,
  MAX_WRITE_LENGTH,
  ST_NOSUID,
  ST_RDONLY,
} from './constants.js';
import { SftpStatusError } from './errors.js';
import type { HandleTable } from './handles.js';
import { type PacketReader, PacketWriter, statusPacket as status } from './packet.js';
import { type Confinement, displayPath, fsPath } from './paths.js';

/** Entries per READDIR reply (OpenSSH sends 100). */
const READDIR_BATCH = 100;
const DATA_HEADER = 13; // uint32 length, byte type, uint32 id, uint32 data length

const fsyncFd = promisify(fsync);

export type Reply = Buffer | undefined;
type Handler = (s: OpContext, r: PacketReader, id: number) => Reply | Promise<Reply>;

/** What a request handler may use of its session. */
export interface OpContext {
  readonly paths: Confinement;
  readonly handles: HandleTable;
  readonly readOnly: boolean;
  readonly maxHandles: number;
  addRead(n: number): void;
  addWritten(n: number): void;
  /** A request changed the entry at `hostPath` (a byte string, as paths are here); `removed`: took its name away. */
  changed(hostPath: string, removed?: boolean): void;
}

export interface Op {
  name: string;
  /** Runs concurrently with other concurrent ops (after all earlier exclusive ones). */
  concurrent?: boolean;
  /** Returns a promise (waits for the disk); every other op completes before its handler returns. */
  waits?: boolean;
  /** Refused in read-only mode (the SETSTAT family checks for itself: applyAttrs). */
  mutates?: boolean;
  run: Handler;
}

/**
 * Permission bits the guest may give a host file: not set-user-ID or set-group-ID. With them, a guest user could
 * leave a program in the export that runs as the host user, or as root where the agent runs as root, and the export
 * is reported nosuid anyway (statvfsReply). They are dropped, not refused, so `cp -p` or `tar x` of such a file in
 * the guest still works, as on a nosuid mount.
 */
function permissionBits(mode: number): number {
  return mode & 0o1777;
}

/**
 * A change of owner the guest may make: each id stays as it is or becomes the agent's own user or one of its
 * groups, which is all a host user who is not root can do. An agent run as root must not do more for the guest.
 */
function checkOwner(host: string, current: Stats, uid: number, gid: number): void {
  const euid = process.geteuid?.() ?? current.uid;
  const groups = [process.getegid?.() ?? current.gid, ...(process.getgroups?.() ?? [])];
  const uidOk = uid === -1 || uid === current.uid || uid === euid;
  if (uidOk && (gid === -1 || gid === current.gid || groups.includes(gid))) return;
  throw new SftpStatusError(
    FX.PERMISSION_DENIED,
    `chown of ${displayPath(host)} to ${uid}:${gid} refused: files in the mount stay with the host user ${euid}`,
  );
}

/** Writes through one handle are reported as a change at most this often (see opWrite). */
const WRITE_REPORT_MS = 5;

const ok = (id: number) => status(id, FX.OK, 'ok');

function attrsReply(id: number, st: Stats): Buffer {
  const w = new PacketWriter(FXP.ATTRS, 40).u32(id);
  writeStats(w, st);
  return w.finish();
}

/** A NAME reply with one entry and no attributes (REALPATH, READLINK). */
function singleName(id: number, name: string): Buffer {
  const w = new PacketWriter(FXP.NAME, 2 * name.length + 20).u32(id).u32(1).path(name).path(name);
  writeEmptyAttrs(w);
  return w.finish();
}

export function readOnlyRefusal(op: string): SftpStatusError {
  return new SftpStatusError(FX.PERMISSION_DENIED, `${op} refused: the export is read-only`);
}

function openFlags(pflags: number): number {
  const rw = pflags & (FXF.READ | FXF.WRITE);
  let flags = rw === (FXF.READ | FXF.WRITE) ? C.O_RDWR : rw === FXF.WRITE ? C.O_WRONLY : C.O_RDONLY;
  if (pflags & FXF.APPEND) flags |= C.O_APPEND;
  if (pflags & FXF.CREAT) flags |= C.O_CREAT;
  if (pflags & FXF.TRUNC) flags |= C.O_TRUNC;
  if (pflags & FXF.EXCL) flags |= C.O_EXCL;
  // The path is already resolved; a link appearing at the final component now is a race, not something to follow.
  // O_NONBLOCK: open is synchronous, and opening a FIFO without it would wait for the other end.
  return flags | C.O_NOFOLLOW | C.O_NONBLOCK;
}

const MUTATING_OPEN = FXF.WRITE | FXF.APPEND | FXF.CREAT | FXF.TRUNC | FXF.EXCL;

function opOpen(s: OpContext, r: PacketReader, id: number): Reply {
  const path = r.path();
  const pflags = r.u32();
  const attrs = readAttrs(r);
  if (s.readOnly && pflags & MUTATING_OPEN) throw readOnlyRefusal(`open for writing of ${displayPath(path)}`);
  s.handles.ensureRoom();
  // O_CREAT|O_EXCL must fail on an existing link rather than create its target.
  const exclusive = (pflags & (FXF.CREAT | FXF.EXCL)) === (FXF.CREAT | FXF.EXCL);
  const host = s.paths.resolve(path, !exclusive);
  const fd = openSync(fsPath(host), openFlags(pflags), permissionBits(attrs.mode ?? 0o666));
  if (pflags & (FXF.CREAT | FXF.TRUNC)) s.changed(host);
  return handleReply(id, s.handles.add({ kind: 'file', fd, path: host }));
}

function handleReply(id: number, token: Buffer): Buffer {
  return new PacketWriter(FXP.HANDLE, 16).u32(id).bytes(token).finish();
}

/**
 * Runs a request on an open handle, naming the handle's host path on what it throws: an errno error from a call on a
 * descriptor carries no path, and a full disk should be logged with the file it hit (server.ts logs those).
 */
function onHandle<T>(hostPath: string, act: () => T): T {
  try {
    return act();
  } catch (err) {
    throw withHostPath(err, hostPath);
  }
}

function withHostPath(err: unknown, hostPath: string): unknown {
  if (err instanceof Error && !('hostPath' in err)) Object.assign(err, { hostPath });
  return err;
}

function opClose(s: OpContext, r: PacketReader, id: number): Reply {
  const token = r.bytes();
  onHandle(s.handles.get(token).path, () => s.handles.close(token));
  return ok(id);
}

function opRead(s: OpContext, r: PacketReader, id: number): Reply {
  const h = s.handles.file(r.bytes());
  const offset = r.u64();
  const len = Math.min(r.u32(), MAX_READ_LENGTH);
  const packet = Buffer.allocUnsafe(DATA_HEADER + len);
  // A zero-length read is answered with zero bytes, not EOF: the offset may be anywhere in the file.
  const bytesRead = len === 0 ? 0 : onHandle(h.path, () => readSync(h.fd, packet, DATA_HEADER, len, offset));
  if (bytesRead === 0 && len > 0) return status(id, FX.EOF, 'end of file');
  packet.writeUInt32BE(DATA_HEADER - 4 + bytesRead, 0);
  packet[4] = FXP.DATA;
  packet.writeUInt32BE(id, 5);
  packet.writeUInt32BE(bytesRead, 9);
  s.addRead(bytesRead);
  return packet.subarray(0, DATA_HEADER + bytesRead);
}

function opWrite(s: OpContext, r: PacketReader, id: number): Reply {
  const h = s.handles.file(r.bytes());
  const offset = r.u64();
  const data = r.bytes();
  onHandle(h.path, () => {
    for (let done = 0; done < data.length; ) done += writeSync(h.fd, data, done, data.length - done, offset + done);
  });
  s.addWritten(data.length);
  // A large file arrives in thousands of writes: reported at most every few ms, well inside the watch's slack for
  // telling the guest's writes from a later host change (watch/watcher.ts GUEST_ECHO_SLACK_MS).
  const now = performance.now();
  if (h.reportedAt === undefined || now - h.reportedAt >= WRITE_REPORT_MS) {
    h.reportedAt = now;
    s.changed(h.path);
  }
  return ok(id);
}

const statOp =
  (follow: boolean): Handler =>
  (s, r, id) => {
    const path = r.path();
    // lstat even when following: resolution has already walked the links, and lstat cannot be raced into one.
    const { stats } = s.paths.resolveAndStat(path, follow);
    if (!stats) throw new SftpStatusError(FX.NO_SUCH_FILE, `${displayPath(path)}: no such file or directory`);
    return attrsReply(id, stats);
  };

function opFstat(s: OpContext, r: PacketReader, id: number): Reply {
  return attrsReply(id, fstatSync(s.handles.file(r.bytes()).fd));
}

/**
 * Applies attributes in OpenSSH's order: size, permissions, times, owner. The marker touch changes nothing; anything
 * else is refused on a read-only export.
 */
function applyAttrs(
  s: OpContext,
  op: string,
  a: RequestedAttrs,
  ops: {
    truncate(size: number): void;
    chmod(mode: number): void;
    utimes(atime: number, mtime: number): void;
    chown(uid: number, gid: number): void;
  },
): void {
  if (isMarkerTouch(a)) return;
  if (s.readOnly) throw readOnlyRefusal(op);
  if (a.size !== undefined) ops.truncate(a.size);
  if (a.mode !== undefined) ops.chmod(permissionBits(a.mode));
  if (a.atime !== undefined && a.mtime !== undefined) ops.utimes(a.atime, a.mtime);
  if (a.uid !== undefined && a.gid !== undefined) ops.chown(keptId(a.uid), keptId(a.gid));
}

/**
 * An id as chown(2) takes it: SFTP carries chown's -1 ("leave it as it is", as `chown USER f` and `chgrp G f` send
 * for the other id) as the unsigned 0xFFFFFFFF.
 */
function keptId(id: number): number {
  return id === 0xffff_ffff ? -1 : id;
}

/**
 * truncate(2) by path as OpenSSH's sftp-server does it: it needs write permission only. Node's truncateSync opens the
 * file for reading and writing, which a write-only file (mode 0200) refuses.
 */
function truncatePath(host: string | Buffer, size: number): void {
  // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking the session; regular files ignore it.
  const fd = openSync(host, C.O_WRONLY | C.O_NONBLOCK);
  try {
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}

function opSetstat(s: OpContext, r: PacketReader, id: number): Reply {
  const path = r.path();
  const attrs = readAttrs(r);
  // Before resolving: a marker touch of a symlink pointing out of the export must still raise the guest's event.
  if (isMarkerTouch(attrs)) return ok(id);
  // sshfs sends SETSTAT for lutimes and lchown too. The guest kernel resolves links itself for the calls that follow
  // them, so a path that is a link here names the link's own inode (tar and rsync restoring a link's times, touch -h,
  // chown -h): following it would change the target, or fail for a dangling link (node_modules/.bin).
  const link = s.paths.resolveAndStat(path, false);
  if (link.stats?.isSymbolicLink()) {
    setLinkAttrs(s, link.path, attrs, 'setstat');
    return ok(id);
  }
  const hostPath = s.paths.resolve(path, true);
  const host = fsPath(hostPath);
  applyAttrs(s, 'setstat', attrs, {
    truncate: (size) => truncatePath(host, size),
    chmod: (mode) => chmodSync(host, mode),
    utimes: (at, mt) => lutimesSync(host, at, mt),
    chown: (uid, gid) => {
      checkOwner(hostPath, lstatSync(host), uid, gid);
      lchownSync(host, uid, gid);
    },
  });
  s.changed(hostPath);
  return ok(id);
}

function opLsetstat(s: OpContext, r: PacketReader, id: number): Reply {
  const path = r.path();
  const attrs = readAttrs(r);
  if (isMarkerTouch(attrs)) return ok(id);
  setLinkAttrs(s, s.paths.resolve(path, false), attrs, EXT.LSETSTAT);
  return ok(id);
}

/** Sets `attrs` on `hostPath` itself, not on what it links to: times and owner; a link's mode or size cannot be. */
function setLinkAttrs(s: OpContext, hostPath: string, attrs: RequestedAttrs, op: string): void {
  const host = fsPath(hostPath);
  const isLink = lstatSync(host).isSymbolicLink();
  const notOnLink = (what: string) => {
    if (isLink) throw new SftpStatusError(FX.OP_UNSUPPORTED, `cannot ${what} a symbolic link`);
  };
  applyAttrs(s, op, attrs, {
    truncate: (size) => {
      notOnLink('truncate');
      truncatePath(host, size);
    },
    chmod: (mode) => {
      notOnLink('chmod');
      chmodSync(host, mode);
    },
    utimes: (at, mt) => lutimesSync(host, at, mt),
    chown: (uid, gid) => {
      checkOwner(hostPath, lstatSync(host), uid, gid);
      lchownSync(host, uid, gid);
    },
  });
  s.changed(hostPath);
}

function opFsetstat(s: OpContext, r: PacketReader, id: number): Reply {
  const { fd, path } = s.handles.file(r.bytes());
  applyAttrs(s, 'fsetstat', readAttrs(r), {
    truncate: (size) => ftruncateSync(fd, size),
    chmod: (mode) => fchmodSync(fd, mode),
    utimes: (at, mt) => futimesSync(fd, at, mt),
    chown: (uid, gid) => {
      checkOwner(path, fstatSync(fd), uid, gid);
      fchownSync(fd, uid, gid);
    },
  });
  s.changed(path);
  return ok(id);
}

function opOpendir(s: OpContext, r: PacketReader, id: number): Reply {
  const { path: host, root } = s.paths.resolveAndStat(r.path(), true, false);
  s.handles.ensureRoom();
  // latin1: entry names arrive as byte strings, like every other path here.
  const dir = opendirSync(fsPath(host), { bufferSize: READDIR_BATCH, encoding: 'latin1' });
  // The root's '..' is the root itself: decided now, against the root this listing is of (it may be repointed).
  const parent = host === root ? host : posix.dirname(host);
  return handleReply(id, s.handles.add({ kind: 'dir', dir, path: host, parent, dotsSent: false, eof: false }));
}

function opReaddir(s: OpContext, r: PacketReader, id: number): Reply {
  const h = s.handles.dir(r.bytes());
  const names: string[] = [];
  const stats: Stats[] = [];
  const add = (name: string, hostPath: string) => {
    const st = statEntry(hostPath);
    if (!st) return;
    names.push(name);
    stats.push(st);
  };
  if (!h.dotsSent) {
    h.dotsSent = true;
    add('.', h.path);
    add('..', h.parent);
  }
  while (!h.eof && names.length < READDIR_BATCH) {
    const entry = h.dir.readSync();
    if (entry === null) h.eof = true;
    else add(entry.name, h.path === '/' ? `/${entry.name}` : `${h.path}/${entry.name}`);
  }
  if (names.length === 0) return status(id, FX.EOF, 'end of directory');
  const now = Date.now();
  const w = new PacketWriter(FXP.NAME, names.length * 120).u32(id);
  w.u32(names.length);
  names.forEach((name, i) => {
    const st = stats[i];
    w.path(name).path(longname(name, st, now));
    writeStats(w, st);
  });
  return w.finish();
}

/**
 * A listed entry's attributes, or null to leave it out: removed since the readdir, or not ours to stat (EACCES,
 * ELOOP). One such entry must not fail the whole listing, as OpenSSH's sftp-server also skips it.
 */
function statEntry(hostPath: string): Stats | null {
  try {
    return lstatSync(fsPath(hostPath), { throwIfNoEntry: false }) ?? null;
  } catch {
    return null;
  }
}

/**
 * A name a request takes away (remove, rmdir, rename): never the export's root, whose loss would end the mount for
 * every guest process (a guest `rmdir` of an empty mount point reaches the root this way).
 */
function resolveName(s: OpContext, clientPath: string): string {
  const { path, root } = s.paths.resolveAndStat(clientPath, false, false);
  if (path === root)
    throw new SftpStatusError(
      FX.PERMISSION_DENIED,
      `${displayPath(clientPath)} is the root of the mount: it cannot be removed or renamed through it`,
    );
  return path;
}

/** `unlinks` marks requests that rename or remove a name, after which cached parent directories are dropped. */
const pathOp =
  (follow: boolean, act: (host: Buffer, r: PacketReader) => unknown, unlinks = false): Handler =>
  (s, r, id) => {
    const hostPath = unlinks ? resolveName(s, r.path()) : s.paths.resolve(r.path(), follow);
    try {
      act(fsPath(hostPath), r);
    } finally {
      if (unlinks) s.paths.forgetParents();
    }
    s.changed(hostPath, unlinks);
    return ok(id);
  };

const twoPathOp =
  (act: (from: Buffer, to: Buffer) => unknown, unlinks = false): Handler =>
  (s, r, id) => {
    const from = r.path();
    const to = r.path();
    const hostFrom = unlinks ? resolveName(s, from) : s.paths.resolve(from, false);
    const hostTo = unlinks ? resolveName(s, to) : s.paths.resolve(to, false);
    try {
      act(fsPath(hostFrom), fsPath(hostTo));
    } finally {
      if (unlinks) s.paths.forgetParents();
    }
    s.changed(hostFrom, unlinks);
    s.changed(hostTo);
    return ok(id);
  };

/** SFTP v3 RENAME never replaces an existing target (POSIX replacement is posix-rename@openssh.com). */
function renameNoReplace(from: Buffer, to: Buffer): void {
  if (lstatSync(to, { throwIfNoEntry: false })) throw new SftpStatusError(FX.FAILURE, `rename target already exists`);
  renameSync(from, to);
}

function opRealpath(s: OpContext, r: PacketReader, id: number): Reply {
  return singleName(id, s.paths.realpath(r.path()));
}

function opReadlink(s: OpContext, r: PacketReader, id: number): Reply {
  return singleName(id, readlinkSync(fsPath(s.paths.resolve(r.path(), false)), { encoding: 'latin1' }));
}

// OpenSSH (and therefore sshfs) sends SYMLINK as (target, linkpath), the reverse of the draft; tether follows
// OpenSSH. The target is stored verbatim: it is only ever followed through resolve(), which confines it.
function opSymlink(s: OpContext, r: PacketReader, id: number): Reply {
  const target = r.path();
  const link = s.paths.resolve(r.path(), false);
  if (target.includes('\0')) throw new SftpStatusError(FX.BAD_MESSAGE, 'symlink target contains a NUL byte');
  try {
    symlinkSync(fsPath(target), fsPath(link));
  } finally {
    s.paths.forgetParents();
  }
  s.changed(link);
  return ok(id);
}

function statvfsReply(id: number, st: BigIntStatsFs, readOnly: boolean): Buffer {
  const w = new PacketWriter(FXP.EXTENDED_REPLY, 96).u32(id);
  w.u64(st.bsize).u64(st.bsize).u64(st.blocks).u64(st.bfree).u64(st.bavail);
  w.u64(st.files).u64(st.ffree).u64(st.ffree).u64(0);
  w.u64(ST_NOSUID | (readOnly ? ST_RDONLY : 0)).u64(255);
  return w.finish();
}

function opStatvfs(s: OpContext, r: PacketReader, id: number): Reply {
  const host = s.paths.resolve(r.path(), true);
  return statvfsReply(id, statfsSync(fsPath(host), { bigint: true }), s.readOnly);
}

function opFstatvfs(s: OpContext, r: PacketReader, id: number): Reply {
  const h = s.handles.get(r.bytes());
  return statvfsReply(id, statfsSync(fsPath(h.path), { bigint: true }), s.readOnly);
}

async function opFsync(s: OpContext, r: PacketReader, id: number): Promise<Reply> {
  const h = s.handles.file(r.bytes());
  await fsyncFd(h.fd).catch((err: unknown) => {
    throw withHostPath(err, h.path);
  });
  return ok(id);
}

function opLimits(s: OpContext, _r: PacketReader, id: number): Reply {
  const w = new PacketWriter(FXP.EXTENDED_REPLY, 40).u32(id);
  return w.u64(MAX_PACKET_LENGTH).u64(MAX_READ_LENGTH).u64(MAX_WRITE_LENGTH).u64(s.maxHandles).finish();
}

export const OPS = new Map<number, Op>([
  [FXP.OPEN, { name: 'open', run: opOpen }],
  [FXP.CLOSE, { name: 'close', run: opClose }],
  [FXP.READ, { name: 'read', concurrent: true, run: opRead }],
  [FXP.WRITE, { name: 'write', mutates: true, run: opWrite }],
  [FXP.LSTAT, { name: 'lstat', concurrent: true, run: statOp(false) }],
  [FXP.STAT, { name: 'stat', concurrent: true, run: statOp(true) }],
  [FXP.FSTAT, { name: 'fstat', concurrent: true, run: opFstat }],
  [FXP.SETSTAT, { name: 'setstat', run: opSetstat }],
  [FXP.FSETSTAT, { name: 'fsetstat', run: opFsetstat }],
  [FXP.OPENDIR, { name: 'opendir', run: opOpendir }],
  [FXP.READDIR, { name: 'readdir', run: opReaddir }],
  [FXP.REMOVE, { name: 'remove', mutates: true, run: pathOp(false, (p) => unlinkSync(p), true) }],
  [FXP.MKDIR, { name: 'mkdir', mutates: true, run: pathOp(false, (p, r) => mkdirSync(p, mkdirMode(r))) }],
  [FXP.RMDIR, { name: 'rmdir', mutates: true, run: pathOp(false, (p) => rmdirSync(p), true) }],
  [FXP.REALPATH, { name: 'realpath', concurrent: true, run: opRealpath }],
  [FXP.RENAME, { name: 'rename', mutates: true, run: twoPathOp(renameNoReplace, true) }],
  [FXP.READLINK, { name: 'readlink', concurrent: true, run: opReadlink }],
  [FXP.SYMLINK, { name: 'symlink', mutates: true, run: opSymlink }],
]);

function mkdirMode(r: PacketReader): number {
  return permissionBits(readAttrs(r).mode ?? 0o777);
}

export const EXTENDED_OPS = new Map<string, Op>([
  [EXT.POSIX_RENAME, { name: EXT.POSIX_RENAME, mutates: true, run: twoPathOp((a, b) => renameSync(a, b), true) }],
  [EXT.HARDLINK, { name: EXT.HARDLINK, mutates: true, run: twoPathOp((a, b) => linkSync(a, b)) }],
  [EXT.LSETSTAT, { name: EXT.LSETSTAT, run: opLsetstat }],
  [EXT.STATVFS, { name: EXT.STATVFS, concurrent: true, run: opStatvfs }],
  [EXT.FSTATVFS, { name: EXT.FSTATVFS, concurrent: true, run: opFstatvfs }],
  [EXT.FSYNC, { name: EXT.FSYNC, waits: true, run: opFsync }],
  [EXT.LIMITS, { name: EXT.LIMITS, concurrent: true, run: opLimits }],
]);
