// Watches a directory tree for a mount's file events: one fs.watch (an inotify watch on Linux) per directory, and the
// entries known in each. A notification names one entry; looking at that entry alone (lstat) says what happened, so
// an event costs the same however large its directory is. (chokidar re-read and lstat'ed the whole directory on each
// event: creating 10,000 files in one directory through the mount took minutes, with the agent's thread busy.)
// Never follows symlinks and never enters ignored paths; a directory it may not read is left out.

import { EventEmitter } from 'node:events';
import { type Dirent, type FSWatcher, type Stats, watch } from 'node:fs';
import { lstat, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

export type TreeEventKind = 'add' | 'change' | 'unlink' | 'addDir' | 'unlinkDir';

interface TreeWatcherOptions {
  /** Paths (absolute) not to report or enter. */
  ignored?: (path: string) => boolean;
}

type TreeWatcherEvents = {
  event: [kind: TreeEventKind, path: string, stats: Stats | undefined];
  /** A watch could not be made or failed (ENOSPC, EMFILE: the tree is no longer fully watched). */
  error: [NodeJS.ErrnoException];
  /** The watched directory itself is gone (removed or renamed away): nothing is watched any more. */
  rootGone: [];
};

interface Dir {
  watcher: FSWatcher | null;
  /** Which directory is watched: its inode and birth time (0 where the filesystem keeps none), see checkSelf. */
  ino: number;
  birth: number;
  /** Entry name → whether it is a directory, and its inode (0 until looked at): a directory replaced under the same name is another one to watch. */
  entries: Map<string, Entry>;
}

interface Entry {
  isDir: boolean;
  ino: number;
}

/** Errors that only mean the entry is not there (any more), or not ours to read: nothing to report. */
const ABSENT = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG']);

export class TreeWatcher extends EventEmitter<TreeWatcherEvents> {
  private readonly dirs = new Map<string, Dir>();
  /** Entries notified since the last look, by directory. */
  private pending = new Map<string, Set<string>>();
  private scheduled = false;
  /** Paths being looked at, and those notified again meanwhile (looked at once more after). */
  private readonly looking = new Set<string>();
  private readonly again = new Set<string>();
  /** Watched directories whose own watch said they were deleted or moved: watched anew if one is there again. */
  private readonly suspect = new Set<string>();
  /** Directories whose watch reported an event under their own name (themselves, or an entry named alike). */
  private selfEvents = new Set<string>();
  private closed = false;
  private readonly root: string;

  constructor(
    root: string,
    private readonly opts: TreeWatcherOptions = {},
  ) {
    super();
    this.root = resolve(root);
  }

  /**
   * Watches the tree as it is (no events for what is already there); resolves once every directory is watched. The
   * root is followed if it is a symlink (a mount's location may be one); nothing under it is.
   */
  async start(): Promise<void> {
    const st = await stat(this.root).catch(() => undefined);
    if (!st?.isDirectory()) {
      this.close();
      this.emit('rootGone');
      return;
    }
    await this.watchDir(this.root, false, st);
  }

  /** Directories watched. */
  get size(): number {
    return this.dirs.size;
  }

  /** The root's entries as last seen: absolute path → whether it is a directory. */
  topLevel(): [string, boolean][] {
    return [...(this.dirs.get(this.root)?.entries ?? [])].map(([name, e]) => [join(this.root, name), e.isDir]);
  }

  close(): void {
    this.closed = true;
    for (const dir of this.dirs.values()) dir.watcher?.close();
    this.dirs.clear();
    this.pending.clear();
  }

  /**
   * Watches `path` and reads it: with `announce` (a directory that appeared), each entry found is reported as added,
   * since files may be made in it before its watch exists.
   */
  private async watchDir(path: string, announce: boolean, self: Stats): Promise<void> {
    if (this.closed || this.dirs.has(path)) return;
    const dir: Dir = { watcher: null, ino: self.ino, birth: self.birthtimeMs, entries: new Map() };
    try {
      dir.watcher = watch(path, { persistent: true }, (type, name) => this.notice(path, name, type));
      dir.watcher.on('error', (err: NodeJS.ErrnoException) => this.failed(path, err));
    } catch (err) {
      return this.failed(path, err as NodeJS.ErrnoException);
    }
    this.dirs.set(path, dir);
    // Read after the watch exists: an entry made in between is both listed and notified, and the notice finds it.
    let list: Dirent[];
    try {
      list = await readdir(path, { withFileTypes: true });
    } catch (err) {
      return this.failed(path, err as NodeJS.ErrnoException);
    }
    if (this.closed || this.dirs.get(path) !== dir) return;
    const subdirs: Promise<void>[] = [];
    for (const entry of list) {
      const child = join(path, entry.name);
      if (dir.entries.has(entry.name) || this.opts.ignored?.(child)) continue;
      const isDir = entry.isDirectory();
      const stats = isDir || announce ? await lstat(child).catch(() => undefined) : undefined;
      // Gone meanwhile (its own notice says so), or this directory was: nothing to add.
      if (this.closed || this.dirs.get(path) !== dir || (isDir && !stats)) continue;
      dir.entries.set(entry.name, { isDir, ino: stats?.ino ?? 0 });
      if (announce) this.emit('event', isDir ? 'addDir' : 'add', child, stats);
      if (isDir && stats) subdirs.push(this.watchDir(child, announce, stats));
    }
    await Promise.all(subdirs);
  }

  private notice(dir: string, name: string | Buffer | null, type = 'change'): void {
    if (this.closed || !this.dirs.has(dir)) return;
    if (type === 'rename' && name !== null && name.toString() === basename(dir)) this.selfEvents.add(dir);
    let names = this.pending.get(dir);
    if (!names) {
      names = new Set();
      this.pending.set(dir, names);
    }
    // No name (the kernel's queue overflowed): every known entry, and the directory read again.
    if (name === null) for (const known of this.dirs.get(dir)?.entries.keys() ?? []) names.add(known);
    else if (name.length > 0) names.add(name.toString());
    if (name === null) void this.rescan(dir);
    if (this.scheduled) return;
    this.scheduled = true;
    // Notifications of one loop turn (a burst of writes to one file) are looked at once.
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    const selves = this.selfEvents;
    this.pending = new Map();
    this.selfEvents = new Set();
    for (const [dir, names] of batch) for (const name of names) void this.look(dir, name);
    for (const dir of selves) void this.checkSelf(dir);
  }

  /** What became of entry `name` of `dir`: reported by comparing it with what was known. */
  private async look(dir: string, name: string): Promise<void> {
    const path = join(dir, name);
    if (this.looking.has(path)) {
      this.again.add(path);
      return;
    }
    this.looking.add(path);
    try {
      await this.compare(dir, name, path);
    } finally {
      this.looking.delete(path);
      if (this.again.delete(path)) void this.look(dir, name);
    }
  }

  private async compare(dir: string, name: string, path: string): Promise<void> {
    const d = this.dirs.get(dir);
    if (!d || this.opts.ignored?.(path)) return;
    let stats: Stats | undefined;
    try {
      stats = await lstat(path);
    } catch (err) {
      if (!ABSENT.has((err as NodeJS.ErrnoException).code ?? ''))
        return this.failed(path, err as NodeJS.ErrnoException);
    }
    if (this.closed || this.dirs.get(dir) !== d) return;
    const known = d.entries.get(name);
    const suspect = this.suspect.delete(path);
    // Gone, of another kind, or another directory under the same name (`rm -rf dist && mkdir dist`, a swap by
    // rename; its watch said so, as the inode number may be reused), or one whose watch never came (removed during
    // the walk): the old one is reported gone.
    const replaced =
      known?.isDir === true && stats?.isDirectory() && (suspect || stats.ino !== known.ino || !this.dirs.has(path));
    if (known !== undefined && (!stats || stats.isDirectory() !== known.isDir || replaced)) {
      d.entries.delete(name);
      if (known.isDir) this.forgetDir(path);
      this.emit('event', known.isDir ? 'unlinkDir' : 'unlink', path, undefined);
    }
    if (!stats) return;
    const isDir = stats.isDirectory();
    const entry = d.entries.get(name);
    if (entry === undefined) {
      d.entries.set(name, { isDir, ino: stats.ino });
      this.emit('event', isDir ? 'addDir' : 'add', path, stats);
      if (isDir) await this.watchDir(path, true, stats);
    } else if (!isDir) {
      entry.ino = stats.ino;
      this.emit('event', 'change', path, stats);
    }
  }

  /** A notification without a name: the directory's entries are compared with a fresh listing. */
  private async rescan(dir: string): Promise<void> {
    const list = await readdir(dir).catch(() => [] as string[]);
    for (const name of list) void this.look(dir, name);
  }

  /**
   * A directory's watch reported a deletion or move under the directory's own name: the directory itself (its watch
   * is over, even if a new directory of that name is there at once, perhaps with the same inode number), unless an
   * entry of that name inside it is what the event was about, or the directory is still the one watched. libuv
   * reports every inotify event of a directory as a rename, so a chmod or touch of the directory itself reads the
   * same; its birth time tells it from a new directory that reuses the inode (`rm -rf d && mkdir d`). Where the
   * filesystem keeps no birth time, it is taken for gone.
   */
  private async checkSelf(dir: string): Promise<void> {
    const d = this.dirs.get(dir);
    const base = basename(dir);
    if (!d || d.entries.has(base)) return;
    const entry = await lstat(join(dir, base)).catch(() => undefined);
    if (this.closed || this.dirs.get(dir) !== d || entry) return;
    // The root is followed if it is a symlink (start), nothing else is.
    const now = await (dir === this.root ? stat : lstat)(dir).catch(() => undefined);
    if (this.closed || this.dirs.get(dir) !== d) return;
    if (now?.isDirectory() && now.ino === d.ino && d.birth !== 0 && now.birthtimeMs === d.birth) return;
    if (dir === this.root) {
      this.close();
      this.emit('rootGone');
      return;
    }
    this.suspect.add(dir);
    void this.look(dirname(dir), base);
  }

  /** Stops watching a directory that went away, and everything under it (found through its entries). */
  private forgetDir(path: string): void {
    const dir = this.dirs.get(path);
    if (!dir) return;
    dir.watcher?.close();
    this.dirs.delete(path);
    for (const [name, e] of dir.entries) if (e.isDir) this.forgetDir(join(path, name));
  }

  private failed(path: string, err: NodeJS.ErrnoException): void {
    // Gone already, or not ours to read: the parent's notice (if any) tells the rest.
    if (ABSENT.has(err.code ?? '')) {
      this.dirs.get(path)?.watcher?.close();
      this.dirs.delete(path);
      return;
    }
    err.path ??= path;
    this.emit('error', err);
  }
}
