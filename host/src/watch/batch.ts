// Batching and debouncing of file events for one mount: events are coalesced per path (add then unlink is
// nothing, unlink then add is a change...) and flushed when the mount has been quiet for `debounceMs`, or at
// the latest `maxDelayMs` after the first event of a batch, in chunks the protocol accepts. Timers only; the
// callback decides what a flush means.
import { type FsEventKind, type FsEvents, LIMITS } from '@tether/protocol';

export type FsEvent = FsEvents['events'][number];

export interface BatchOptions {
  debounceMs?: number;
  maxDelayMs?: number;
  maxBatch?: number;
}

/** The kind a path ends up with after `prev` then `next`; null when the two cancel out. */
export function coalesce(prev: FsEventKind | undefined, next: FsEventKind): FsEventKind | null {
  if (prev === 'add' && next === 'change') return 'add';
  if (prev === 'add' && next === 'unlink') return null;
  if (prev === 'addDir' && next === 'unlinkDir') return null;
  if (prev === 'unlink' && next === 'add') return 'change';
  return next;
}

export class EventBatcher {
  private pending = new Map<string, FsEventKind>();
  private quietTimer: NodeJS.Timeout | undefined;
  private maxTimer: NodeJS.Timeout | undefined;
  private readonly debounceMs: number;
  private readonly maxDelayMs: number;
  private readonly maxBatch: number;

  constructor(
    private readonly flushTo: (events: FsEvent[]) => void,
    opts: BatchOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? 75;
    this.maxDelayMs = opts.maxDelayMs ?? 250;
    this.maxBatch = Math.min(opts.maxBatch ?? LIMITS.fsEventsPerBatch, LIMITS.fsEventsPerBatch);
  }

  push(path: string, kind: FsEventKind): void {
    const next = coalesce(this.pending.get(path), kind);
    // Re-inserting keeps the map in order of each path's latest event.
    this.pending.delete(path);
    if (next) this.pending.set(path, next);
    if (this.pending.size >= this.maxBatch) {
      this.flush();
      return;
    }
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => this.flush(), this.debounceMs);
    this.maxTimer ??= setTimeout(() => this.flush(), this.maxDelayMs);
  }

  flush(): void {
    clearTimeout(this.quietTimer);
    clearTimeout(this.maxTimer);
    this.quietTimer = undefined;
    this.maxTimer = undefined;
    if (this.pending.size === 0) return;
    const events = [...this.pending].map(([path, kind]) => ({ path, kind }));
    this.pending = new Map();
    for (let i = 0; i < events.length; i += this.maxBatch) this.flushTo(events.slice(i, i + this.maxBatch));
  }

  /** Drops pending events and timers. */
  clear(): void {
    clearTimeout(this.quietTimer);
    clearTimeout(this.maxTimer);
    this.quietTimer = undefined;
    this.maxTimer = undefined;
    this.pending.clear();
  }
}
