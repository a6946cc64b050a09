// Early collection of dead Buffers in an agent process started with --expose-gc (the background agent: see
// cli/agent-spawn.ts). Forwarding allocates a Buffer per socket read and per SSH packet; V8 accounts their memory as
// external and starts a full GC for it only once 64 MiB more of it exist than after the previous one. At 100 MB/s
// that is a new 64 MiB of garbage every ~0.6 s, resident meanwhile (and glibc keeps much of the freed memory), which
// was most of the agent's RSS growth under 4 streams. Checking a few times a second and collecting once 16 MiB
// more than the live level have piled up bounds that garbage, for a few ms of GC per collection. Without --expose-gc
// (tests, library use) nothing runs.

export interface BufferCollectorOptions {
  /** Collect when ArrayBuffer memory exceeds the level after the last collection by this much. */
  limitBytes?: number;
  intervalMs?: number;
  /** Runs a full GC; default globalThis.gc (present only with --expose-gc). */
  collect?: () => void;
  /** Current ArrayBuffer memory; default process.memoryUsage().arrayBuffers. */
  arrayBuffers?: () => number;
}

export interface BufferCollector {
  /** Collections run so far. */
  readonly collections: number;
  stop(): void;
}

const DEFAULT_LIMIT = 16 * 1024 * 1024;
const DEFAULT_INTERVAL_MS = 100;

/** Starts the collector; null when no GC function is available. The timer never keeps the process alive. */
export function startBufferCollector(opts: BufferCollectorOptions = {}): BufferCollector | null {
  const collect = opts.collect ?? exposedGc();
  if (!collect) return null;
  const limit = opts.limitBytes ?? DEFAULT_LIMIT;
  const arrayBuffers = opts.arrayBuffers ?? (() => process.memoryUsage().arrayBuffers);
  // The live level (stream buffers, SSH windows) is the lowest reading since the last collection; the next one is
  // due only above that. Not the reading right after collecting: V8 frees the dead memory on a helper thread.
  let live = Number.POSITIVE_INFINITY;
  let collections = 0;
  const timer = setInterval(() => {
    const now = arrayBuffers();
    live = Math.min(live, now);
    if (now - live < limit) return;
    collect();
    collections++;
    live = Number.POSITIVE_INFINITY;
  }, opts.intervalMs ?? DEFAULT_INTERVAL_MS);
  timer.unref();
  return {
    get collections() {
      return collections;
    },
    stop: () => clearInterval(timer),
  };
}

let processCollector: BufferCollector | null = null;

/** The process's one collector with the defaults (started on first call); it watches the process, not one agent. */
export function processBufferCollector(): BufferCollector | null {
  processCollector ??= startBufferCollector();
  return processCollector;
}

function exposedGc(): (() => void) | null {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? () => gc() : null;
}
