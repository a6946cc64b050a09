// Polls the kernel's socket tables and reports listening-port changes as deltas. Owns the current listener set, the
// diff, self-exclusion, the attribution of new listeners, and the pacing that keeps the scanner's CPU use near a
// target fraction of a core. Listeners from other sources (ListenerSource: DNAT rules) join every scan's rows. Must
// not know about the protocol or the link to the host: callers subscribe to 'delta' and decide what to send.
//
// Two paces: ticks read the socket counters and only the tables whose counter moved (gate.ts), so they are cheap and
// run every `minIntervalMs` unless they get expensive; full scans re-read every non-empty table to catch what
// counters cannot show, as often as their own measured cost allows within the same CPU target, every 2 s to 10 s (they
// only catch corner cases, and once a second they alone cost 0.2% of a core in the loaded testbed).
// A listener closing and another opening within one tick leave the counters unchanged: a probe of the known listeners'
// descriptors (liveness.ts) notices the close and makes that tick read the tables.
// Attributing new listeners to processes is kept out of both: its cost follows how often listeners appear, not how
// often we look, so slowing the ticks would only delay detection without bounding it.

import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { findSocketOwners, socketInodesOf } from './attribution.js';
import { GatedScanner, type GatedTableStats } from './gate.js';
import type { ScanTrigger } from './listen-events.js';
import { ListenerProbe } from './liveness.js';
import { type Listener, listenerKey } from './types.js';

export interface PortPollerOptions {
  minIntervalMs?: number;
  maxIntervalMs?: number;
  /**
   * CPU budget as a fraction of one core, applied separately to ticks (interval = smoothed tick cost / target) and to
   * full scans (period = last full scan's cost / target). Default 1 %: an idle tick costs 0.1–0.4 ms, so idle
   * polling stays at the minimum interval; the budget slows ticks only while tables churn (connections opening and
   * closing make every tick read), where half of that let a busy guest's detection drift past 300 ms.
   */
  targetCpu?: number;
  /** Bounds of the period between full scans (defaults 2 s and 10 s). */
  minFullScanMs?: number;
  maxFullScanMs?: number;
  /** Leave out listeners held by this process (the agent's own sockets). Default true. */
  excludeSelf?: boolean;
  /** Further socket inodes to leave out; consulted only when new listeners appear. */
  excludeInodes?: () => ReadonlySet<number>;
  procRoot?: string;
  /** Bytes per read of a /proc/net table. */
  chunkSize?: number;
  /**
   * Millisecond clock that measures scan cost (for tests). By default the cost is the lesser of the scan's wall time
   * and this process's CPU time over it: on a busy machine the wall time counts the time others ran while we waited,
   * and the CPU time counts our other threads (GC, compiler); neither is ours to pace on.
   */
  clock?: () => number;
  /** Wall clock in ms that times the full scans. */
  now?: () => number;
  /** Listeners found elsewhere than in the socket tables (DnatSource), merged into every scan. */
  sources?: readonly ListenerSource[];
  /** Signals that a listener may have come or gone (ListenEvents); each pulls the next tick forward (wake). */
  triggers?: readonly ScanTrigger[];
}

/** Where listeners come from besides /proc/net: started and stopped with the poller; a change scans at once. */
export interface ListenerSource {
  start(onChange: () => void): void;
  stop(): void;
  /** Fresh objects each call: the poller keeps and attributes them. A socket at the same address wins. */
  listeners(): Listener[];
}

export interface ScanDelta {
  seq: number;
  added: Listener[];
  removed: Listener[];
}

export interface ScanSnapshot {
  seq: number;
  listeners: Listener[];
}

export interface PortPollerStats {
  intervalMs: number;
  /** Cost of the last scan, leaving out attribution (lastAttributionMs). */
  lastScanMs: number;
  lastAttributionMs: number;
  scans: number;
  /** Ticks a wake-up (a kernel listen event) pulled forward. */
  wakes: number;
  /** Period between full scans, and the cost of the last one. */
  fullScanIntervalMs: number;
  lastFullScanMs: number;
  /** Per table: its socket counter and how often it was actually read. */
  tables: GatedTableStats[];
  lastError: string | null;
}

type PortPollerEvents = { delta: [ScanDelta]; error: [Error] };

// Smoothing of the measured tick cost, about a mean over the last 7 ticks: what is budgeted is CPU per unit of time,
// and a tick that reads a table whose counter moved costs many cheap ticks' worth; reacting to each one alone would
// slow detection right after every port change.
const COST_ALPHA = 0.25;

// Wake-ups (a kernel listen event) pull the next tick forward, to WAKE_DELAY_MS after the event: the tracepoint fires
// as the socket's state changes, just before the kernel puts it in the table and counts it. Their own CPU budget,
// on top of the ticks' target, bounds a storm of events (containers starting in other namespaces fire them too): a
// pulled tick comes at least the smoothed tick cost / WAKE_TARGET_CPU, and WAKE_MIN_GAP_MS, after the last scan.
const WAKE_DELAY_MS = 2;
const WAKE_TARGET_CPU = 0.05;
const WAKE_MIN_GAP_MS = 10;

export class PortPoller extends EventEmitter<PortPollerEvents> {
  private readonly minIntervalMs: number;
  private readonly maxIntervalMs: number;
  private readonly targetCpu: number;
  private readonly minFullScanMs: number;
  private readonly maxFullScanMs: number;
  private readonly excludeSelf: boolean;
  private readonly excludeInodes: (() => ReadonlySet<number>) | undefined;
  private readonly procRoot: string;
  private readonly stopwatch: Stopwatch;
  private readonly now: () => number;
  private readonly scanner: GatedScanner;
  private readonly probe: ListenerProbe;
  private readonly sources: readonly ListenerSource[];
  private readonly triggers: readonly ScanTrigger[];

  private readonly current = new Map<string, Listener>();
  /** The listeners of `current` that have a descriptor to probe; null when `current` changed since it was built. */
  private probed: Listener[] | null = null;
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
  private fullScanIntervalMs: number;
  private lastFullScanMs = 0;
  private lastFullScanAt = Number.NEGATIVE_INFINITY;
  /** Time the current scan spent on self-exclusion and attribution of new listeners. */
  private attributionMs = 0;
  private lastAttributionMs = 0;
  private lastError: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** When the scheduled tick runs, and when the last scan of any kind ran (clock of `now`). */
  private nextTickAt = 0;
  private lastScanAt = Number.NEGATIVE_INFINITY;
  private wakes = 0;

  constructor(options: PortPollerOptions = {}) {
    super();
    this.minIntervalMs = options.minIntervalMs ?? 100;
    this.maxIntervalMs = Math.max(this.minIntervalMs, options.maxIntervalMs ?? 2000);
    this.targetCpu = options.targetCpu ?? 0.01;
    this.minFullScanMs = options.minFullScanMs ?? 2000;
    this.maxFullScanMs = Math.max(this.minFullScanMs, options.maxFullScanMs ?? 10_000);
    this.fullScanIntervalMs = this.minFullScanMs;
    this.excludeSelf = options.excludeSelf ?? true;
    this.excludeInodes = options.excludeInodes;
    this.procRoot = options.procRoot ?? '/proc';
    this.stopwatch = options.clock ? clockStopwatch(options.clock) : cpuStopwatch;
    this.now = options.now ?? (() => performance.now());
    this.scanner = new GatedScanner({ procRoot: this.procRoot, chunkSize: options.chunkSize });
    this.probe = new ListenerProbe(this.procRoot);
    this.sources = options.sources ?? [];
    this.triggers = options.triggers ?? [];
    this.intervalMs = this.minIntervalMs;
  }

  start(): void {
    if (this.timer) return;
    this.schedule(0);
    for (const source of this.sources) source.start(() => this.timer && this.scanNow());
    for (const trigger of this.triggers) trigger.start(() => this.wake());
  }

  /** Stops polling and releases the files kept open between scans (scanning again reopens them). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.scanner.close();
    for (const source of this.sources) source.stop();
    for (const trigger of this.triggers) trigger.stop();
  }

  /** A listener may have come or gone: runs the next tick soon, unless it is due sooner anyway (see WAKE_DELAY_MS). */
  wake(): void {
    if (!this.timer) return;
    const now = this.now();
    const gap = Math.max(WAKE_MIN_GAP_MS, this.smoothedCostMs / WAKE_TARGET_CPU);
    const at = Math.max(now + WAKE_DELAY_MS, this.lastScanAt + gap);
    if (at >= this.nextTickAt) return;
    this.wakes++;
    clearTimeout(this.timer);
    this.schedule(at - now);
  }

  get running(): boolean {
    return this.timer !== null;
  }

  /** Scans now (a full scan when one is due); emits and returns the delta if anything changed, else null. */
  scanNow(): ScanDelta | null {
    const at = this.now();
    this.lastScanAt = at;
    const full = at - this.lastFullScanAt >= this.fullScanIntervalMs;
    const elapsed = this.stopwatch();
    this.attributionMs = 0;
    let delta: ScanDelta | null = null;
    try {
      this.probed ??= [...this.current.values()].filter((l) => l.fd !== undefined);
      const closed = full ? null : this.probe.gone(this.probed);
      delta = this.diff(full || closed !== null);
      // Still listed with the same socket: another process holds it too (a fork). Its descriptor tells nothing more.
      if (closed && this.current.get(listenerKey(closed)) === closed) {
        closed.fd = undefined;
        this.probed = null;
      }
      this.lastError = null;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.lastError = error.message;
      if (this.listenerCount('error') > 0) this.emit('error', error);
    }
    this.lastAttributionMs = this.attributionMs;
    this.account(elapsed() - this.attributionMs, full);
    if (full) this.lastFullScanAt = at;
    if (delta) this.emit('delta', delta);
    return delta;
  }

  snapshot(): ScanSnapshot {
    return { seq: this.seq, listeners: [...this.current.values()].sort(compareListeners) };
  }

  /** The current listeners, unsorted and uncopied (a lookup per UDP flow need not sort them all); read at once. */
  currentListeners(): Iterable<Listener> {
    return this.current.values();
  }

  /** How many listeners there are now. */
  get count(): number {
    return this.current.size;
  }

  stats(): PortPollerStats {
    return {
      intervalMs: this.intervalMs,
      lastScanMs: this.lastScanMs,
      lastAttributionMs: this.lastAttributionMs,
      scans: this.scans,
      wakes: this.wakes,
      fullScanIntervalMs: this.fullScanIntervalMs,
      lastFullScanMs: this.lastFullScanMs,
      tables: this.scanner.stats(),
      lastError: this.lastError,
    };
  }

  private schedule(delayMs: number): void {
    this.nextTickAt = this.now() + delayMs;
    this.timer = setTimeout(() => {
      this.scanNow();
      if (this.timer) this.schedule(this.intervalMs);
    }, delayMs);
  }

  private account(costMs: number, full: boolean): void {
    this.scans++;
    this.lastScanMs = costMs;
    const budget = (ms: number, min: number, max: number) => Math.min(max, Math.max(min, ms / this.targetCpu));
    if (full) {
      // Full scans are paced on their own cost, and kept out of the tick cost so that their spikes do not slow ticks.
      // The first one runs cold (first reads, unoptimised code): a one-off, not a measure of later scans.
      if (this.scans > 1) this.lastFullScanMs = costMs;
      this.fullScanIntervalMs = budget(this.lastFullScanMs, this.minFullScanMs, this.maxFullScanMs);
      // A tick reads a subset of what a full scan reads, so a full scan cheaper than the tick estimate lowers it.
      // Without this, ticks slowed to the full-scan period would all be full scans and never relax.
      if (this.scans === 1 || costMs >= this.smoothedCostMs) return;
    }
    this.smoothedCostMs += COST_ALPHA * (costMs - this.smoothedCostMs);
    this.intervalMs = budget(this.smoothedCostMs, this.minIntervalMs, this.maxIntervalMs);
  }

  private diff(full: boolean): ScanDelta | null {
    const { rows, seen, seenInodes, current, excluded } = this;
    rows.length = 0;
    seen.clear();
    seenInodes.clear();
    this.scanner.scan(rows, full);
    for (const source of this.sources) rows.push(...source.listeners());
    for (const row of rows) {
      seenInodes.add(row.inode);
      const key = listenerKey(row);
      if (!seen.has(key)) seen.set(key, row);
    }

    // A key whose socket was replaced (another inode now) counts as closed and reopened: its owner may differ.
    const removed: Listener[] = [];
    for (const [key, listener] of current) {
      if (stillThere(listener, seen.get(key), seenInodes)) continue;
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
    if (fresh.length > 0) {
      const elapsed = this.stopwatch();
      fresh = this.dropExcluded(fresh);
      if (fresh.length > 0) this.attribute(fresh);
      this.attributionMs = elapsed();
    }
    for (const listener of fresh) current.set(listenerKey(listener), listener);

    if (fresh.length === 0 && removed.length === 0) return null;
    this.probed = null;
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
    // Rows from other sources (inode 0) have no socket to look for: the walk would never find them all and stop early.
    const inodes = new Set(fresh.filter((l) => l.inode !== 0).map((l) => l.inode));
    if (inodes.size === 0) return;
    const owners = findSocketOwners(inodes, this.procRoot);
    for (const listener of fresh) {
      const owner = owners.get(listener.inode);
      if (!owner) continue;
      listener.pid = owner.pid;
      listener.command = owner.command;
      listener.fd = owner.fd;
    }
  }
}

/** Starts a measurement; the returned function gives the ms elapsed since. */
type Stopwatch = () => () => number;

const clockStopwatch =
  (clock: () => number): Stopwatch =>
  () => {
    const start = clock();
    return () => clock() - start;
  };

const cpuStopwatch: Stopwatch = () => {
  const wall = performance.now();
  const cpu = process.cpuUsage();
  return () => {
    const { user, system } = process.cpuUsage(cpu);
    return Math.min(performance.now() - wall, (user + system) / 1000);
  };
};

/**
 * Whether a listener of the last scan is still the one at its address. A socket is, while its inode is still seen (one
 * of several SO_REUSEPORT sockets at the address will do); a row from another source (inode 0) is, while that source
 * still reports the same (a socket that appears there, or a rule that now names another target, replaces it).
 */
function stillThere(listener: Listener, now: Listener | undefined, seenInodes: ReadonlySet<number>): boolean {
  if (!now) return false;
  if (listener.inode === 0) return now.inode === 0 && now.command === listener.command;
  return seenInodes.has(listener.inode);
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
  poller.stop();
  return poller.snapshot().listeners;
}
