// All configured mounts of one VM: mounts them over the agent's SSH client, keeps their states, remounts after a
// reconnect or an unexpected sshfs exit (capped backoff), runs the host-side watchers that feed the guest's
// inotify applier, and unmounts cleanly on stop. Each mount is started on its own: one whose requirements are not
// met is held (showing why) while the others mount. The agent wiring calls it; it opens no SSH connections itself.
import { posix } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import type { Client } from 'ssh2';
import { DEFAULT_WATCH_IGNORE, type MountConfig } from '../config/schema.js';
import { componentLogger, type Logger } from '../log.js';
import type { MountCause, MountView } from '../model.js';
import { MountWatcher, type WatchCounters } from '../watch/index.js';
import { GuestMount } from './mount.js';
import { checkMountRequirements, type MountRequirement, type RequirementOptions } from './requirements.js';

/** Sends one fs.events batch to the guest agent; false when the link is down (the batch is dropped). */
export type FsEventSink = (events: FsEvents) => boolean;

export interface MountManagerOptions {
  /** The agent's root logger; lines are written with component `mount`, `sftp` and `watch`. */
  logger: Logger;
  /** Called with a fresh view after every state change of a mount or its watch. */
  onChange?(view: MountView): void;
  /**
   * Whether the guest agent applies `markerTouch` (default yes). One from before it gets batches without the field
   * and touches with the current time, which changes the host file: then the echoes of its touches are filtered.
   */
  guestAppliesMarker?(): boolean;
  /** The mounts are the default mount of ~, which the instance is ready without: a failure is logged as a warning. */
  optional?: boolean;
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

interface Entry {
  mount: GuestMount;
  watcher: MountWatcher | null;
  retryTimer?: NodeJS.Timeout;
  retryDelay: number;
  /** Started: from then on mounted, retried and followed across reconnects; before, held by its requirements. */
  begun: boolean;
  /** Its mount waits for a mount it lies inside, which is being mounted now (see mountEntry). */
  deferred: boolean;
  /**
   * Where the last requirement check found the mount point in the guest: what views show before a mount attempt
   * resolves it (a mount held by its requirements makes none). Only shown: a path the mount itself did not resolve
   * is not one it may unmount or send file events to.
   */
  checkedGuestPath: string | null;
}

export class MountManager {
  private readonly entries: Entry[];
  private client: Client | null = null;
  private notify: FsEventSink = () => false;
  private stopped = false;
  /** Why mounts are not retried now (the guest is shutting down); null normally. */
  private paused: string | null = null;

  constructor(
    readonly mounts: readonly MountConfig[],
    private readonly opts: MountManagerOptions,
  ) {
    this.entries = mounts.map((config) => this.makeEntry(config));
  }

  /**
   * Boot requirements in the guest (sshfs, user_allow_other, mount points); see requirements.ts. Where a mount point
   * resolved to is kept for the views of mounts that have not resolved it themselves.
   */
  async checkRequirements(client: Client, opts?: RequirementOptions): Promise<MountRequirement[]> {
    const reqs = await checkMountRequirements(client, this.mounts, opts);
    for (const r of reqs) {
      if (r.guestPath === undefined) continue;
      for (const i of r.mounts ?? []) {
        const e = this.entries[i];
        if (e.checkedGuestPath === r.guestPath) continue;
        e.checkedGuestPath = r.guestPath;
        if (e.mount.guestPath === null) this.changed(e);
      }
    }
    return reqs;
  }

  /**
   * Starts the mounts `which` (indices into `mounts`; default all) not started yet: mounts them and starts their
   * watchers, side by side. Resolves when each has settled (mounted or error) and, unless `awaitWatchers` is false,
   * its watcher finished its initial scan (a large home directory takes a while: the view's `inotify` turns
   * `watching` then); a failed mount does not reject (its view says why, and it is retried).
   */
  async start(
    client: Client,
    notify: FsEventSink,
    opts: { awaitWatchers?: boolean; which?: readonly number[] } = {},
  ): Promise<void> {
    this.stopped = false;
    this.client = client;
    this.notify = notify;
    const starting = (opts.which ?? [...this.entries.keys()]).map((i) => this.entries[i]).filter((e) => !e.begun);
    for (const e of starting) e.begun = true;
    const watching = Promise.all(starting.map((e) => e.watcher?.start()));
    const mounting = Promise.all(outermostFirst(starting).map((e) => this.mountEntry(e)));
    if (opts.awaitWatchers === false) {
      const log = componentLogger(this.opts.logger, 'watch');
      watching.catch((err: Error) => log.error({ err }, `starting a file watcher failed: ${err.message}`));
      await mounting;
    } else await Promise.all([watching, mounting]);
  }

  /** The mounts (indices) not started yet: their requirements were not met, or not checked yet. */
  waiting(): number[] {
    return [...this.entries.keys()].filter((i) => !this.entries[i].begun);
  }

  /** Mount `index` cannot be started yet (its requirements are not met): it shows `reason` as its error. */
  hold(index: number, reason: string, cause: MountCause | null): void {
    const e = this.entries[index];
    if (!e.begun) e.mount.unmet(reason, cause);
  }

  /** Tries every started mount that is neither mounted nor mounting now, instead of at its next backoff step. */
  retryNow(): void {
    if (this.stopped || !this.client) return;
    for (const e of outermostFirst(this.entries)) {
      if (!e.begun || e.mount.state === 'mounted' || e.mount.state === 'mounting') continue;
      e.retryDelay = RETRY_MIN_MS;
      void this.mountEntry(e);
    }
  }

  /**
   * The guest is shutting down: its sshfs processes end with it, so a mount that ends shows `suspended` with `reason`,
   * and none is tried again until unpause() (its agent answers after all) or resume() (SSH connects again). Mounts that
   * still serve are left alone: guest programs may be writing their last bytes.
   */
  pause(reason: string): void {
    this.paused = reason;
    for (const e of this.entries) {
      if (!e.begun) continue;
      e.mount.endExpected = reason;
      clearTimeout(e.retryTimer);
      // A mount already suspended (SSH lost) now says what it waits for.
      if (e.mount.state === 'error' || e.mount.state === 'suspended') e.mount.suspend(reason, 'guest-stopping');
    }
  }

  /** Ends a pause(): the mounts that are not mounted are tried now. */
  unpause(): void {
    if (this.paused === null) return;
    this.clearPause();
    this.retryNow();
  }

  private clearPause(): void {
    this.paused = null;
    for (const e of this.entries) e.mount.endExpected = null;
  }

  /** The SSH connection is gone: every started mount becomes `suspended` until resume(). Watchers keep running. */
  suspend(reason = 'ssh connection lost'): void {
    this.client = null;
    for (const e of this.entries) {
      if (!e.begun) continue; // a held mount keeps showing what it waits for
      clearTimeout(e.retryTimer);
      e.mount.suspend(reason);
    }
  }

  /** A remount comes (see resume): the started mounts that are suspended say so while the guest is checked. */
  remounting(): void {
    for (const e of this.entries) if (e.begun) e.mount.remounting();
  }

  /**
   * After a reconnect: clears stale FUSE mounts in the guest and mounts the started mounts again. `notify` replaces
   * the sink.
   */
  async resume(client: Client, notify?: FsEventSink): Promise<void> {
    if (this.stopped) return;
    this.clearPause();
    this.client = client;
    if (notify) this.notify = notify;
    await Promise.all(outermostFirst(this.entries.filter((e) => e.begun)).map((e) => this.mountEntry(e)));
  }

  /** Unmounts everything in the guest (when still connected) and stops the watchers. */
  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    this.client = null;
    await Promise.all(
      this.entries.map(async (e) => {
        clearTimeout(e.retryTimer);
        await e.watcher?.close();
        await e.mount.unmount(client);
      }),
    );
  }

  views(): MountView[] {
    return this.entries.map((e) => this.view(e));
  }

  /** Host-side watch counters per mount point (sent, echoes, dropped), for status and tests. */
  watchCounters(): Record<string, WatchCounters> {
    const out: Record<string, WatchCounters> = {};
    for (const e of this.entries) if (e.watcher) out[e.mount.mountPoint] = { ...e.watcher.counters };
    return out;
  }

  private makeEntry(config: MountConfig): Entry {
    const bindings = { location: config.location, mountPoint: config.mountPoint ?? config.location };
    const log = componentLogger(this.opts.logger, 'mount', bindings);
    const mount = new GuestMount(config, log, componentLogger(this.opts.logger, 'sftp', bindings), {
      optional: this.opts.optional === true,
    });
    const entry: Entry = {
      mount,
      watcher: null,
      retryDelay: RETRY_MIN_MS,
      begun: false,
      deferred: false,
      checkedGuestPath: null,
    };
    if (config.inotify) {
      // Both drivers answer the marker touch (MARKER_TOUCH) without changing anything: tether's SFTP server itself,
      // sftp-server through the filter in front of it (sftp/marker-filter.ts). Its touches leave no echo to filter.
      entry.watcher = new MountWatcher({
        location: config.location,
        mountPoint: mount.mountPoint,
        ignore: [...(config.ignoreDefaults ? DEFAULT_WATCH_IGNORE : []), ...config.ignore],
        covered: coveredDirs(config, this.mounts),
        touchEchoes: () => this.opts.guestAppliesMarker?.() === false,
        log: componentLogger(this.opts.logger, 'watch', bindings),
        // The guest applier needs an absolute root it can find in its mountinfo: the mount point as resolved in the
        // guest (a configured `~/x` would be refused as a hostile path). Until the first mount resolved it there is
        // no sshfs mount for the events to reach, so they are dropped as while the link is down.
        send: (batch) => {
          const root = mount.guestPath;
          return root !== null && this.client !== null && this.notify({ ...batch, root, markerTouch: true });
        },
        onState: () => this.changed(entry),
      });
      const watcher = entry.watcher;
      mount.onGuestChange = (hostPath, removed) => watcher.guestChanged(hostPath, removed);
    }
    // Only a mounted outer mount puts host files under it; under one that failed lies the guest's own directory.
    mount.nested = () => this.entries.some((o) => o.mount.state === 'mounted' && inside(o.mount, mount));
    mount.sharedWith = (path) => {
      const busy = (m: GuestMount) => m.state === 'mounted' || m.state === 'mounting';
      return (
        this.entries.find((o) => o.mount !== mount && busy(o.mount) && o.mount.guestPath === path)?.mount.mountPoint ??
        null
      );
    };
    mount.on('state', () => this.changed(entry));
    mount.on('lost', () => this.scheduleRetry(entry));
    return entry;
  }

  /**
   * Mounts `e`, unless a mount it lies inside (`~` and `~/proj`) is being mounted now: mounted after it, `e` would be
   * hidden under it, so `e` waits for it to settle. Mounts inside `e` that are mounted now (its first attempt failed,
   * or its requirements held it) are unmounted first, while their paths still reach them, and mounted again after it.
   */
  private async mountEntry(e: Entry): Promise<void> {
    const client = this.client;
    if (!client || this.stopped) return;
    clearTimeout(e.retryTimer);
    const outer = this.entries.find((o) => o.mount.state === 'mounting' && inside(o.mount, e.mount));
    if (outer) {
      if (!e.deferred) this.opts.logger.debug(`mount ${e.mount.mountPoint} waits for ${outer.mount.mountPoint}`);
      e.deferred = true;
      return;
    }
    e.deferred = false;
    const covered = this.entries.filter((i) => i.mount.state === 'mounted' && inside(e.mount, i.mount));
    for (const i of covered) {
      this.opts.logger.info(`mount ${i.mount.mountPoint} is unmounted to mount ${e.mount.mountPoint} around it first`);
      i.deferred = true;
      await i.mount.unmount(client);
    }
    try {
      await e.mount.mount(client);
      e.retryDelay = RETRY_MIN_MS;
    } catch {
      // The mount logged and recorded why; try again later while connected. One that was under way when the guest
      // began to shut down failed with it: suspended like the others.
      if (this.paused !== null) e.mount.suspend(this.paused, 'guest-stopping');
      else this.scheduleRetry(e);
    }
    const inner = this.entries.filter((i) => i.begun && i.deferred && inside(e.mount, i.mount));
    await Promise.all(outermostFirst(inner).map((i) => this.mountEntry(i)));
  }

  private scheduleRetry(e: Entry): void {
    if (this.stopped || !this.client || this.paused !== null) return;
    clearTimeout(e.retryTimer);
    const delay = e.retryDelay * (0.8 + Math.random() * 0.4);
    e.retryDelay = Math.min(e.retryDelay * 2, RETRY_MAX_MS);
    e.retryTimer = setTimeout(() => void this.mountEntry(e), delay);
    e.retryTimer.unref();
  }

  private changed(e: Entry): void {
    this.opts.onChange?.(this.view(e));
  }

  private view(e: Entry): MountView {
    const { mount } = e;
    return {
      location: mount.config.location,
      mountPoint: mount.mountPoint,
      guestPath: mount.guestPath ?? e.checkedGuestPath,
      driver: mount.config.driver,
      writable: mount.config.writable,
      state: mount.state,
      // Host edits reach guest watchers only through a mount: the watch runs on meanwhile, but propagates nothing.
      inotify: !e.watcher || (e.watcher.state === 'watching' && mount.state !== 'mounted') ? 'off' : e.watcher.state,
      since: mount.since,
      error: mount.error ?? (e.watcher?.state === 'degraded' ? e.watcher.reason : null),
      cause: mount.cause,
    };
  }
}

/**
 * Whether `inner`'s mount point lies strictly inside `outer`'s: compared as resolved in the guest once both are,
 * as configured before. One spelling for both, so that two mounts are never each inside the other.
 */
function inside(outer: GuestMount, inner: GuestMount): boolean {
  const resolved = outer.guestPath !== null && inner.guestPath !== null;
  const path = (m: GuestMount) => ((resolved ? m.guestPath : m.mountPoint) ?? '').replace(/\/+$/, '');
  const o = path(outer);
  return outer !== inner && path(inner).startsWith(`${o}/`);
}

/**
 * The host directories of `config`'s location that other mounts cover in the guest (`~` mounted with `~/work` on its
 * own mount point inside it): the guest sees them through those mounts, whose own watchers send their events and
 * know the guest's changes there. Watched here too, each host edit would reach the guest twice, and each change the
 * guest makes would come back to it. Mount points compare as configured (both absolute, or both under `~`).
 */
export function coveredDirs(config: MountConfig, all: readonly MountConfig[]): string[] {
  const point = (c: MountConfig) => c.mountPoint ?? c.location;
  const outer = point(config);
  return all.flatMap((other) => {
    const rel = posix.relative(outer, point(other));
    const form = (p: string) => p.startsWith('~');
    if (other === config || form(outer) !== form(point(other)) || !rel || rel.startsWith('..') || posix.isAbsolute(rel))
      return [];
    return [posix.join(config.location, rel)];
  });
}

/** Entries ordered so a mount comes before those inside it (by mount point depth); the order is otherwise kept. */
function outermostFirst(entries: readonly Entry[]): Entry[] {
  const depth = (e: Entry) => (e.mount.guestPath ?? e.mount.mountPoint).split('/').filter(Boolean).length;
  return [...entries].sort((a, b) => depth(a) - depth(b));
}
