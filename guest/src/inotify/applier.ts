// Applies host file events to the guest's sshfs mount so that guest watchers (inotify) see them: a FUSE mount gets
// no kernel events for changes made on the host, but a local `utimes` through the mount does raise them (IN_ATTRIB
// on the path, and on the parent directory for creates/deletes so directory watchers re-scan). When the batch says
// `markerTouch` (the host sets it for both drivers) the touch sets MARKER_TOUCH, which the host answers without
// changing anything, so read-only mounts get events too and host files keep their times; otherwise (an older host)
// it sets the current time.
// Owns batch validation, the mount check, coalescing, rate limiting and confinement to the mount (no symlink may lead
// outside it). The mount check is made on the root as resolved here: the host names the mount point as configured
// (/home/me), and when that path leads through a symlink (/home -> /var/home) the kernel lists the mount under the
// resolved one. The echo of our own touch on the host is suppressed by the host's watcher, which knows the paths it
// just sent; this side only applies.
import { lutimes, realpath, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { type FsEventKind, type FsEvents, MARKER_TOUCH } from '@tether/protocol';
import type { Logger } from '../log.js';
import { type MountCheck, sshfsMountCheck } from './mounts.js';
import { checkRelativePath, checkRoot } from './paths.js';

export interface FsApplierOptions {
  /** Whether `root` is a mount this applier may touch (default: an sshfs mount point per /proc/self/mountinfo). */
  isMount?: MountCheck;
  maxPathsPerSec?: number;
  /** Touches in flight at once (each is an SFTP round trip for sshfs). */
  concurrency?: number;
  /** Paths waiting to be applied; a batch beyond this is dropped with a warning. */
  maxQueued?: number;
}

interface Touch {
  root: string;
  /** The resolved root when it is a mount this applier may touch, else null. */
  realRoot: Promise<string | null>;
  /** Relative to root; '' is the root itself. */
  rel: string;
  /** Touch with MARKER_TOUCH (the batch's markerTouch). */
  marker: boolean;
  /** A path the host removed: the touch is expected to fail (see touchesOf). */
  gone: boolean;
  /** Only once the touches queued before it are done (its batch's removed paths). */
  barrier: boolean;
}

const TOUCH_SELF: ReadonlySet<FsEventKind> = new Set(['add', 'change', 'addDir']);
const TOUCH_PARENT: ReadonlySet<FsEventKind> = new Set(['add', 'unlink', 'addDir', 'unlinkDir']);
const GONE: ReadonlySet<FsEventKind> = new Set(['unlink', 'unlinkDir']);

/**
 * The relative paths a batch touches, each once: `gone`, the paths the host removed, and `rest`, the others and the
 * parent directories. A removed path is touched too, ahead of everything else: sshfs forgets its cached attributes
 * of a path only when a touch of it succeeds, which the marker touch does whatever the host has there, and until
 * then `stat` in the guest kept finding a host-deleted file for 2-3 s (sshfs's cache, then the kernel's), also when a
 * watcher woke on its parent's touch and looked at once. Without the marker the touch would only fail: `gone` is
 * empty then.
 */
export function touchesOf(events: FsEvents['events'], marker = true): { gone: string[]; rest: string[] } {
  const gone = new Set<string>();
  const rest = new Set<string>();
  for (const { path, kind } of events) {
    const rel = checkRelativePath(path);
    if (GONE.has(kind)) {
      if (marker) gone.add(rel);
    } else if (TOUCH_SELF.has(kind)) rest.add(rel);
    if (TOUCH_PARENT.has(kind)) {
      const parent = posix.dirname(rel);
      rest.add(parent === '.' ? '' : parent);
    }
  }
  for (const rel of gone) rest.delete(rel);
  return { gone: [...gone], rest: [...rest] };
}

export class FsApplier {
  private readonly isMount: MountCheck;
  private readonly rate: number;
  private readonly concurrency: number;
  private readonly maxQueued: number;
  private readonly queue: Touch[] = [];
  private tokens: number;
  private refilledAt = performance.now(); // monotonic: a clock stepped back must not stall events
  private running: Promise<void> | null = null;
  private closed = false;
  applied = 0;
  failed = 0;

  constructor(
    private readonly log: Logger,
    options: FsApplierOptions = {},
  ) {
    this.isMount = options.isMount ?? sshfsMountCheck();
    this.rate = options.maxPathsPerSec ?? 2_000;
    this.concurrency = options.concurrency ?? 16;
    this.maxQueued = options.maxQueued ?? 50_000;
    this.tokens = this.rate;
  }

  /**
   * Validates a batch synchronously — throws InvalidFsPathError when a path or the root could escape (the caller
   * treats that as a hostile client) — then queues its touches. A root that does not resolve to a mount is logged
   * and ignored.
   */
  submit(batch: FsEvents): void {
    const root = checkRoot(batch.root);
    const marker = batch.markerTouch === true;
    const { gone, rest } = touchesOf(batch.events, marker);
    const count = gone.length + rest.length;
    if (this.closed || count === 0) return;
    if (this.queue.length + count > this.maxQueued) {
      this.log.warn(
        {
          root,
          paths: count,
          queued: this.queue.length,
        },
        'fs events dropped: too many paths waiting',
      );
      return;
    }
    const realRoot = realpath(root).then(
      (real) => {
        if (this.isMount(real)) return real;
        this.log.warn({ root, real, events: batch.events.length }, 'fs events ignored: root is not an sshfs mount');
        return null;
      },
      (err) => {
        this.log.debug({ root, err }, 'fs events: root unreadable');
        return null;
      },
    );
    for (const rel of gone) this.queue.push({ root, realRoot, rel, marker, gone: true, barrier: false });
    for (const [i, rel] of rest.entries()) {
      this.queue.push({ root, realRoot, rel, marker, gone: false, barrier: i === 0 && gone.length > 0 });
    }
    this.running ??= this.drain().finally(() => {
      this.running = null;
    });
  }

  /** Resolves once everything queued so far has been applied. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed) {
      await this.waitForToken();
      const most = Math.max(1, Math.min(this.concurrency, Math.floor(this.tokens), this.queue.length));
      let n = 1;
      while (n < most && !this.queue[n].barrier) n++;
      this.tokens -= n;
      await Promise.all(this.queue.splice(0, n).map((t) => this.touch(t)));
    }
  }

  private async waitForToken(): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(this.rate, this.tokens + ((now - this.refilledAt) * this.rate) / 1000);
      this.refilledAt = now;
      if (this.tokens >= 1) return;
      await new Promise((resolve) => setTimeout(resolve, Math.ceil(((1 - this.tokens) * 1000) / this.rate)));
    }
  }

  /**
   * utimes (marker or now) on root/rel without following a symlink out of root (the last component is never
   * followed).
   */
  private async touch(t: Touch): Promise<void> {
    const realRoot = await t.realRoot;
    if (realRoot === null) return;
    const now = new Date();
    const [atime, mtime] = t.marker ? [MARKER_TOUCH.atime, MARKER_TOUCH.mtime] : [now, now];
    try {
      if (t.rel === '') {
        await utimes(realRoot, atime, mtime);
      } else {
        const parent = await realpath(posix.join(realRoot, posix.dirname(t.rel)));
        if (parent !== realRoot && !parent.startsWith(`${realRoot}/`)) {
          this.log.warn({ root: t.root, path: t.rel }, 'fs event path leaves its mount through a symlink; not touched');
          this.failed++;
          return;
        }
        await lutimes(posix.join(parent, posix.basename(t.rel)), atime, mtime);
      }
      this.applied++;
    } catch (err) {
      // The touch of a removed path has done its work at sshfs, which then finds the path gone.
      if (t.gone && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.applied++;
        return;
      }
      // Expected now and then: sshfs caches, or the file is already gone again.
      this.failed++;
      this.log.debug({ root: t.root, path: t.rel, err }, 'fs event not applied');
    }
  }
}
