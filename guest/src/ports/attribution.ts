// Finds which process owns a socket, by matching `socket:[inode]` among the /proc/<pid>/fd links, and reads its
// command line. Owns only that lookup: it is called for new listeners only, walks the process table at most once per
// call (each pid's fds are read once and searched for every wanted inode), and keeps nothing between calls.
//
// The walk costs one readlink per open fd of every process visited before the owner (3 s here past processes holding
// 100,000 sockets), so the likely owners go first: processes in our own network namespace (the listeners we see are
// in it; processes of containers are not), newest first (a new listener usually belongs to a new process). Every
// other process is still searched, after those, for sockets handed across namespaces.

import { closeSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { join } from 'node:path';

const COMMAND_MAX_BYTES = 256;

export interface SocketOwner {
  pid: number;
  command: string | null;
  /** The descriptor it was found at: `/proc/<pid>/fd/<fd>` links to the socket while the process holds it there. */
  fd: number;
}

const SOCKET_PREFIX = 'socket:[';

/** Inode of a `socket:[N]` fd link target, or -1 for anything else. */
function socketInode(link: string): number {
  if (!link.startsWith(SOCKET_PREFIX) || !link.endsWith(']')) return -1;
  const n = Number(link.slice(SOCKET_PREFIX.length, -1));
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}

function isPidName(name: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return []; // the process exited, or its fds are not ours to read
  }
}

function readLink(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/** Calls `visit` with each socket inode process `pid` holds open; stops early when `visit` returns false. */
function forEachSocketInode(pid: number, procRoot: string, visit: (inode: number, fd: number) => boolean): void {
  const fdDir = join(procRoot, String(pid), 'fd');
  for (const fd of listDir(fdDir)) {
    const link = readLink(join(fdDir, fd));
    if (link === null) continue;
    const inode = socketInode(link);
    if (inode >= 0 && !visit(inode, Number(fd))) return;
  }
}

/** The socket inode at descriptor `fd` of process `pid`, or -1 (closed, another kind of file, process gone). */
export function socketAt(pid: number, fd: number, procRoot = '/proc'): number {
  const link = readLink(join(procRoot, String(pid), 'fd', String(fd)));
  return link === null ? -1 : socketInode(link);
}

/** Socket inodes held open by one process (empty if it cannot be read). */
export function socketInodesOf(pid: number, procRoot = '/proc'): Set<number> {
  const inodes = new Set<number>();
  forEachSocketInode(pid, procRoot, (inode) => {
    inodes.add(inode);
    return true;
  });
  return inodes;
}

/**
 * Owners of the wanted socket inodes. Inodes whose owner cannot be found (it exited, or permission was denied) are
 * absent from the result. The walk over /proc ends as soon as every inode is found.
 */
export function findSocketOwners(wanted: ReadonlySet<number>, procRoot = '/proc'): Map<number, SocketOwner> {
  const owners = new Map<number, SocketOwner>();
  if (wanted.size === 0) return owners;
  for (const pid of pidsByLikelihood(procRoot)) {
    let command: string | null | undefined;
    forEachSocketInode(pid, procRoot, (inode, fd) => {
      if (wanted.has(inode) && !owners.has(inode)) {
        if (command === undefined) command = readCommand(pid, procRoot);
        owners.set(inode, { pid, command, fd });
      }
      return owners.size < wanted.size;
    });
    if (owners.size === wanted.size) break;
  }
  return owners;
}

/** Every pid, those in our network namespace first, each group newest (highest pid) first. */
function pidsByLikelihood(procRoot: string): number[] {
  const pids = listDir(procRoot)
    .filter(isPidName)
    .map(Number)
    .sort((a, b) => b - a);
  const ours = readLink(join(procRoot, 'self', 'ns', 'net'));
  if (ours === null) return pids;
  const near: number[] = [];
  const far: number[] = [];
  for (const pid of pids) {
    const theirs = readLink(join(procRoot, String(pid), 'ns', 'net'));
    (theirs === ours || theirs === null ? near : far).push(pid);
  }
  return near.concat(far);
}

/** A process's command line with NULs as spaces, at most COMMAND_MAX_BYTES; `[comm]` for kernel threads. */
function readCommand(pid: number, procRoot = '/proc'): string | null {
  const base = join(procRoot, String(pid));
  const cmdline = readHead(join(base, 'cmdline'));
  if (cmdline === null) return null;
  const text = cmdline
    .toString('utf8')
    .replace(/\0/g, ' ')
    .replace(/\uFFFD$/, '')
    .trim();
  if (text !== '') return text;
  const comm = readHead(join(base, 'comm'));
  const name = comm?.toString('utf8').trim();
  return name ? `[${name}]` : null;
}

function readHead(path: string): Buffer | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const buf = Buffer.allocUnsafe(COMMAND_MAX_BYTES);
    let len = 0;
    while (len < buf.length) {
      const n = readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
    }
    return buf.subarray(0, len);
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}
