// SFTP v3 ATTRS: decoding what the client asks to set, encoding host fs.Stats, and the `ls -l` style longname
// that OpenSSH's client prints for READDIR entries. No filesystem access here.

import type { Stats } from 'node:fs';
import { MARKER_TOUCH } from '@tether/protocol';
import { ATTR } from './constants.js';
import type { PacketReader, PacketWriter } from './packet.js';

/** Attributes a client asked to set; absent fields are left alone. Times are in seconds. */
export interface RequestedAttrs {
  size?: number;
  uid?: number;
  gid?: number;
  mode?: number;
  atime?: number;
  mtime?: number;
}

/**
 * The guest applier's marker touch (protocol MARKER_TOUCH's times, nothing else): it only makes the guest
 * kernel raise an event, so it is answered OK and changes nothing, on read-only exports too.
 */
export function isMarkerTouch(a: RequestedAttrs): boolean {
  return (
    a.atime === MARKER_TOUCH.atime &&
    a.mtime === MARKER_TOUCH.mtime &&
    a.size === undefined &&
    a.mode === undefined &&
    a.uid === undefined
  );
}

export function readAttrs(r: PacketReader): RequestedAttrs {
  const flags = r.u32();
  const a: RequestedAttrs = {};
  if (flags & ATTR.SIZE) a.size = r.u64();
  if (flags & ATTR.UIDGID) {
    a.uid = r.u32();
    a.gid = r.u32();
  }
  if (flags & ATTR.PERMISSIONS) a.mode = r.u32();
  if (flags & ATTR.ACMODTIME) {
    a.atime = r.u32();
    a.mtime = r.u32();
  }
  if (flags & ATTR.EXTENDED) {
    // Extended attribute pairs carry nothing tether acts on; they are parsed only to validate the packet.
    for (let n = r.u32(); n > 0; n--) {
      r.bytes();
      r.bytes();
    }
  }
  return a;
}

export function writeStats(w: PacketWriter, st: Stats): void {
  w.u32(ATTR.SIZE | ATTR.UIDGID | ATTR.PERMISSIONS | ATTR.ACMODTIME);
  w.u64(st.size);
  w.u32(st.uid);
  w.u32(st.gid);
  w.u32(st.mode);
  w.u32(Math.floor(st.atimeMs / 1000));
  w.u32(Math.floor(st.mtimeMs / 1000));
}

export function writeEmptyAttrs(w: PacketWriter): void {
  w.u32(0);
}

// A Map, not an object literal: numeric object keys get rewritten by the formatter.
const TYPE_CHARS = new Map<number, string>([
  [0o140000, 's'],
  [0o120000, 'l'],
  [0o100000, '-'],
  [0o060000, 'b'],
  [0o040000, 'd'],
  [0o020000, 'c'],
  [0o010000, 'p'],
]);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIX_MONTHS_MS = 182 * 24 * 3600 * 1000;

function permString(mode: number): string {
  const rwx = (bits: number, special: boolean, specialChar: string) =>
    (bits & 4 ? 'r' : '-') +
    (bits & 2 ? 'w' : '-') +
    (special ? (bits & 1 ? specialChar : specialChar.toUpperCase()) : bits & 1 ? 'x' : '-');
  return (
    (TYPE_CHARS.get(mode & 0o170000) ?? '?') +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

/** Formatted dates by minute (negative keys: the year form), so a READDIR of files written together does the
 * local-time conversion once: it costs tens of microseconds, more than the rest of a longname. */
const WHEN_CACHE_MAX = 1024;
const whenCache = new Map<number, string>();

function formatWhen(mtimeMs: number, recent: boolean): string {
  const minute = Math.floor(mtimeMs / 60_000);
  const key = recent ? minute : -minute - 1;
  let when = whenCache.get(key);
  if (when !== undefined) return when;
  const d = new Date(mtimeMs);
  when = `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2)} ${
    recent
      ? `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`
      : String(d.getFullYear()).padStart(5)
  }`;
  if (whenCache.size >= WHEN_CACHE_MAX) whenCache.clear();
  whenCache.set(key, when);
  return when;
}

/** `-rw-r--r--    1 1000     1000         1234 Jan  2 15:04 name`, like OpenSSH's ls_file(). */
export function longname(name: string, st: Stats, nowMs = Date.now()): string {
  const when = formatWhen(st.mtimeMs, Math.abs(nowMs - st.mtimeMs) < SIX_MONTHS_MS);
  return `${permString(st.mode)} ${String(st.nlink).padStart(4)} ${String(st.uid).padEnd(8)} ${String(st.gid).padEnd(
    8,
  )} ${String(st.size).padStart(8)} ${when} ${name}`;
}
