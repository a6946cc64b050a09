// Polls the kernel's socket tables and reports listening-port changes as deltas. Owns the current listener set, the
// diff, self-exclusion, the attribution of new listeners, and the adaptive polling interval that keeps the scanner's
// CPU use near a target fraction of a core. Must not know about the protocol or the link to the host: callers
// subscribe to 'delta' and decide what to send.

import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { findSocketOwners, socketInodesOf } from './attribution.js';
import { ProcNetScanner } from './procnet.js';
import { type Listener, listenerKey } from './types.js';

export interface PortPollerOptions {
  minIntervalMs?: number;
  maxIntervalMs?: number;
  /** CPU budget for scanning, as a fraction of one core; the interval is the last scans' cost divided by this. */
  targetCpu?: number;
  /** Leave out listeners held by this process (the agent's own sockets). Default true. */
  excludeSelf?: boolean;
  /** Further socket inodes to leave out; consulted only when new listeners appear. */
  excludeInodes?: () => ReadonlySet<number>;
  procRoot?: string;
  /** Bytes per read of a /proc/net table. */
  chunkSize?: number;
  /** Millisecond clock used to measure scan cost (injectable for tests). */
  clock?: () => number;
}

export interface PortDelta {
  seq: number;
  added: Listener[];
  removed: Listener[];
}

export interface PortSnapshot {
  seq: number;
  listeners: Listener[];
}

export interface PortPollerStats {
  intervalMs: number;
  lastScanMs: number;
  scans: number;
  lastError: string | null;
}

type PortPollerEvents = { delta: [PortDelta]; error: [Error] };

// Smoothing of the measured scan cost: rise quickly when scans get expensive, relax slowly when they get cheap.
const COST_RISE = 0.5;
const COST_FALL = 0.3;

export class PortPoller extends EventEmitter<PortPollerEvents> {
  private readonly minIntervalMs: number;
  private readonly maxIntervalMs: number;
  private readonly targetCpu: number;
  private readonly excludeSelf: boolean;
  private readonly excludeInodes: (() => ReadonlySet<number>) | undefined;
  private readonly procRoot: string;
  private readonly clock: () => number;
  private readonly scanner: ProcNetScanner;

  private readonly current = new Map<string, Listener>();
  /** Keys left out as our own, with the inode that was checked, so they are not re-checked every tick. */
  private readonly excluded = new Map<string, number>();
  // Per-scan scratch, cleared and reused.
  private readonly rows: Listener[] = [];
  private readonly seen = new Map<string, Listener>();
  private readonly seenInodes = new Set<number>();

  private seq = 0;
  private scans = 0;
  private lastScanMs = 0;
  private smoothedCostMs = 0;
  private intervalMs: number;
  private lastError: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: PortPollerOptions = {}) {
    super();
    this.minIntervalMs = options.minIntervalMs ?? 100;
    this.maxIntervalMs = Math.max(this.minIntervalMs, options.maxIntervalMs ?? 2000);
    this.targetCpu = options.targetCpu ?? 0.005;
    this.excludeSelf = options.excludeSelf ?? true;
    this.excludeInodes = options.excludeInodes;
    this.procRoot = options.procRoot ?? '/proc';
    this.clock = options.clock ?? (() => performance.now());
    this.scanner = new ProcNetScanner({ procRoot: this.procRoot, chunkSize: options.chunkSize });
    this.intervalMs = this.minIntervalMs;
  }

  start(): void {
    if (this.timer) return;
    this.schedule(0);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  get running(): boolean {
    return this.timer !== null;
  }

  /** Scans now; emits and returns the delta if anything changed, else null. */
  scanNow(): PortDelta | null {
    const started = this.clock();
    let delta: PortDelta | null = null;
    try {
      delta = this.diff();
      this.lastError = null;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.lastError = error.message;
      if (this.listenerCount('error') > 0) this.emit('error', error);
    }
    this.account(this.clock() - started);
    if (delta) this.emit('delta', delta);
    return delta;
  }

  snapshot(): PortSnapshot {
    return { seq: this.seq, listeners: [...this.current.values()].sort(compareListeners) };
  }

  stats(): PortPollerStats {
    return { intervalMs: this.intervalMs, lastScanMs: this.lastScanMs, scans: this.scans, lastError: this.lastError };
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.scanNow();
      if (this.timer) this.schedule(this.intervalMs);
    }, delayMs);
  }

  private account(costMs: number): void {
    this.scans++;
    this.lastScanMs = costMs;
    // The first scan attributes everything already listening: a one-off cost that says nothing about later ticks.
    if (this.scans === 1) return;
    const alpha = costMs > this.smoothedCostMs ? COST_RISE : COST_FALL;
    this.smoothedCostMs += alpha * (costMs - this.smoothedCostMs);
    const wanted = this.smoothedCostMs / this.targetCpu;
    this.intervalMs = Math.min(this.maxIntervalMs, Math.max(this.minIntervalMs, wanted));
  }

  private diff(): PortDelta | null {
    const { rows, seen, seenInodes, current, excluded } = this;
    rows.length = 0;
    seen.clear();
    seenInodes.clear();
    this.scanner.scan(rows);
    for (const row of rows) {
      seenInodes.add(row.inode);
      const key = listenerKey(row);
      if (!seen.has(key)) seen.set(key, row);
    }

    // A key whose socket was replaced (another inode now) counts as closed and reopened: its owner may differ.
    const removed: Listener[] = [];
    for (const [key, listener] of current) {
      if (seen.has(key) && seenInodes.has(listener.inode)) continue;
      removed.push(listener);
      current.delete(key);
    }
    for (const [key, inode] of excluded) {
      if (!seen.has(key) || !seenInodes.has(inode)) excluded.delete(key);
    }

    let fresh: Listener[] = [];
    for (const [key, row] of seen) {
      if (current.has(key)) continue;
      const excludedInode = excluded.get(key);
      if (excludedInode !== undefined && seenInodes.has(excludedInode)) continue;
      fresh.push(row);
    }
    if (fresh.length > 0) fresh = this.dropExcluded(fresh);
    if (fresh.length > 0) this.attribute(fresh);
    for (const listener of fresh) current.set(listenerKey(listener), listener);

    if (fresh.length === 0 && removed.length === 0) return null;
    return { seq: ++this.seq, added: fresh.sort(compareListeners), removed: removed.sort(compareListeners) };
  }

  /** Removes our own listeners; reads our fd table only now, when something new has appeared. */
  private dropExcluded(fresh: Listener[]): Listener[] {
    if (!this.excludeSelf && !this.excludeInodes) return fresh;
    const own = this.excludeSelf ? socketInodesOf(process.pid, this.procRoot) : new Set<number>();
    const extra = this.excludeInodes?.();
    return fresh.filter((l) => {
      if (!own.has(l.inode) && !extra?.has(l.inode)) return true;
      this.excluded.set(listenerKey(l), l.inode);
      return false;
    });
  }

  private attribute(fresh: Listener[]): void {
    const owners = findSocketOwners(new Set(fresh.map((l) => l.inode)), this.procRoot);
    for (const listener of fresh) {
      const owner = owners.get(listener.inode);
      if (!owner) continue;
      listener.pid = owner.pid;
      listener.command = owner.command;
    }
  }
}

function compareListeners(a: Listener, b: Listener): number {
  if (a.proto !== b.proto) return a.proto < b.proto ? -1 : 1;
  if (a.port !== b.port) return a.port - b.port;
  return a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0;
}

/** The listening sockets right now, attributed to their processes (for `tether-guest ports`). */
export function scanOnce(options: Pick<PortPollerOptions, 'procRoot' | 'excludeSelf'> = {}): Listener[] {
  const poller = new PortPoller({ excludeSelf: false, ...options });
  poller.scanNow();
  return poller.snapshot().listeners;
}
