// The guest unix socket paths a host forwards (`/var/run/docker.sock`): each is looked at every POLL_MS, and a change
// (it appeared, went, was replaced, had its mode changed, or its daemon stopped listening and left the file) is
// announced, so the host sees a daemon that starts after it within a second instead of on a slow timer of its own over
// SSH (each such look is an SSH session in the guest's logs). A stat per path and tick, and a read of /proc/net/unix
// while one is a socket, in the guest: nothing is connected to. Owns one timer and one signature per path; one per
// client session.
import { readFileSync, realpathSync, type Stats, statSync } from 'node:fs';
import { basename } from 'node:path';

const POLL_MS = 1_000;

export class SocketWatch {
  private signatures = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly changed: (path: string) => void,
    private readonly pollMs = POLL_MS,
  ) {}

  /** Replaces the paths watched; a path's state when it is added is its starting point (not announced). */
  set(paths: readonly string[]): void {
    const listens = listeningLookup();
    this.signatures = new Map(paths.map((p) => [p, this.signatures.get(p) ?? signature(p, listens)]));
    if (this.signatures.size === 0) this.stop();
    else if (!this.timer) {
      this.timer = setInterval(() => this.poll(), this.pollMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private poll(): void {
    const listens = listeningLookup();
    for (const [path, before] of this.signatures) {
      const now = signature(path, listens);
      if (now === before) continue;
      this.signatures.set(path, now);
      this.changed(path);
    }
  }
}

/**
 * What a path is now, as far as a forward cares: which socket file (symlinks followed), its mode, and whether a
 * socket of this network namespace listens on it (a daemon in another one, rootless docker's, never shows: that
 * stays the same, and only the file's changes count). The file may be named through a symlink the daemon did not
 * bind through: systemd's docker.socket binds /run/docker.sock, forwards name /var/run/docker.sock.
 */
function signature(path: string, listens: Listens): string {
  try {
    const s = statSync(path);
    if (!s.isSocket()) return 'not a socket';
    return `socket ${s.dev}:${s.ino} ${s.mode} ${s.ctimeMs} ${listens(path, s) ? 'listening' : '-'}`;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unreadable';
  }
}

/** Whether the socket file at a path (stat given) is listened on. */
type Listens = (path: string, file: Stats) => boolean;

/**
 * Whether a socket file listens, from one read of /proc/net/unix made on the first question (none when nothing asks).
 * /proc/net/unix names each socket by the path it was bound as, so a path not listed as it is spelled is looked for
 * as its real path (a symlink under another name: ~/.docker/run/docker.sock → /run/user/1000/docker.sock), then among
 * the listed paths with its file's name or its real path's name, by device and inode: a stat for each of those,
 * usually one.
 */
function listeningLookup(): Listens {
  let listening: Set<string> | undefined;
  return (path, file) => {
    listening ??= listeningPaths();
    if (listening.has(path)) return true;
    const real = realPath(path);
    if (real && listening.has(real)) return true;
    const names = new Set([basename(path), basename(real ?? path)]);
    for (const bound of listening) {
      if (!names.has(basename(bound))) continue;
      try {
        const s = statSync(bound);
        if (s.dev === file.dev && s.ino === file.ino) return true;
      } catch {
        // gone since the read, or not ours to look at: not this file
      }
    }
    return false;
  };
}

function realPath(path: string): string | null {
  try {
    return realpathSync(path);
  } catch {
    return null;
  }
}

/** __SO_ACCEPTCON in /proc/net/unix's Flags: the socket listens. */
const ACCEPTING = 0x10000;

/** Paths of the listening unix sockets in this network namespace (/proc/net/unix); empty where it cannot be read. */
function listeningPaths(): Set<string> {
  const paths = new Set<string>();
  let text: string;
  try {
    text = readFileSync('/proc/net/unix', 'latin1');
  } catch {
    return paths;
  }
  // Num RefCount Protocol Flags Type St Inode Path (the path may hold spaces: it is the rest of the line).
  for (const line of text.split('\n').slice(1)) {
    const m = /^\S+ \S+ \S+ ([0-9A-Fa-f]+) \S+ \S+ \S+ (\/.*)$/.exec(line);
    if (m && (Number.parseInt(m[1], 16) & ACCEPTING) !== 0) paths.add(m[2]);
  }
  return paths;
}
