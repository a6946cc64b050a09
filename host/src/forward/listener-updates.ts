// The guest's listener updates (snapshots and deltas) on their way to the forward engine: applied one at a time, in
// order, and what arrives while one is applied is merged into one pending update. A guest that reports changes
// faster than host listeners can be opened and closed (a hostile or broken one, a port storm) then costs the host
// one pending delta of at most `limit` listeners, instead of a growing pile of overlapping applies.
import type { Listener } from '@tether/protocol';
import { listenerId } from './ids.js';

export interface ListenerSink {
  snapshot(listeners: readonly Listener[]): Promise<void>;
  delta(delta: { added: Listener[]; removed: Listener[] }): Promise<void>;
}

export class ListenerUpdates {
  /** A snapshot not yet applied: it replaces whatever came before it. */
  private snapshot: readonly Listener[] | null = null;
  /** Net changes since the pending snapshot (or since the update being applied). */
  private readonly added = new Map<string, Listener>();
  private readonly removed = new Map<string, Listener>();
  /** Callers of `pushSnapshot` waiting for it, or a later one, to be applied. */
  private snapshotWaiters: (() => void)[] = [];
  private draining = false;
  /** Listeners added past `limit` while pending, left out (the engine bounds what it remembers the same way). */
  dropped = 0;

  constructor(
    private readonly sink: ListenerSink,
    private readonly limit: number,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Resolves once this snapshot, or one that replaced it, has been applied. */
  pushSnapshot(listeners: readonly Listener[]): Promise<void> {
    this.snapshot = listeners;
    this.added.clear();
    this.removed.clear();
    const applied = new Promise<void>((resolve) => this.snapshotWaiters.push(resolve));
    this.drain();
    return applied;
  }

  /**
   * A listener removed and added again stays in both (the engine reads that as its socket replaced); one added and
   * then removed ends as removed, which the engine takes for nothing when it never saw it.
   */
  pushDelta(delta: { added: readonly Listener[]; removed: readonly Listener[] }): void {
    for (const l of delta.removed) {
      const id = listenerId(l);
      this.added.delete(id);
      this.removed.set(id, l);
    }
    for (const l of delta.added) {
      const id = listenerId(l);
      if (!this.added.has(id) && this.added.size >= this.limit) {
        this.dropped++;
        continue;
      }
      this.added.set(id, l);
    }
    this.drain();
  }

  /** Drops what is pending (the link went down: its next snapshot tells what holds). */
  clear(): void {
    this.snapshot = null;
    this.added.clear();
    this.removed.clear();
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    void this.run();
  }

  private async run(): Promise<void> {
    for (;;) {
      const snapshot = this.snapshot;
      if (snapshot) {
        this.snapshot = null;
        const waiters = this.snapshotWaiters;
        this.snapshotWaiters = [];
        await this.sink.snapshot(snapshot).catch(this.onError);
        for (const resolve of waiters) resolve();
        continue;
      }
      // Checked and cleared in one step: an update pushed after this starts a new run.
      if (this.added.size === 0 && this.removed.size === 0) {
        this.draining = false;
        return;
      }
      const delta = { added: [...this.added.values()], removed: [...this.removed.values()] };
      this.added.clear();
      this.removed.clear();
      await this.sink.delta(delta).catch(this.onError);
    }
  }
}
