// Early collection of dead Buffers in an agent process started with --expose-gc (the background agent: see
// cli/agent-spawn.ts). Forwarding allocates a Buffer per socket read and per SSH packet; V8 accounts their memory as
// external and starts a full GC for it only once 64 MiB more of it exist than after the previous one. At 150 MB/s
// that is a new 64 MiB of garbage every ~0.4 s, resident meanwhile (and glibc keeps much of the freed memory), which
// was most of the agent's RSS growth under 4 streams.
//
// The collector reads V8's external memory (ArrayBuffers, for the most part) every 25 ms while it moves (every 100 ms
// while it is steady), and after every 2 MiB of SSH traffic: a busy event loop runs timers late (40 ms stalls were
// measured under 4 streams, time enough for 40 MiB of garbage), while the traffic itself is what makes the garbage.
// Once 8 MiB more than the live level have piled up, it runs a minor GC: forwarding's Buffers die young, and a
// scavenge frees them for a fraction of a full GC's cost. Only when 16 MiB stay above the live level after it (the
// garbage is in the old generation) does it run a full GC. Without --expose-gc (tests, library use) nothing runs.

import { getHeapStatistics } from 'node:v8';

export type CollectionKind = 'minor' | 'major';

interface BufferCollectorOptions {
  /**
   * A full GC when ArrayBuffer memory still exceeds the live level (the lowest reading since the last full GC) by
   * this after a minor GC; the minor GC runs at half of it.
   */
  limitBytes?: number;
  /** Between readings while ArrayBuffer memory moves by a MiB or more per reading. */
  busyIntervalMs?: number;
  /** Between readings while it is steady. */
  idleIntervalMs?: number;
  /** Runs a GC of the kind asked for; default globalThis.gc (present only with --expose-gc). */
  collect?: (kind: CollectionKind) => void;
  /**
   * Current ArrayBuffer memory; default V8's external memory. Not process.memoryUsage(): that reads /proc/self/stat
   * on every call, 15 times the cost, and throws EMFILE when the agent is out of file descriptors (a flood of
   * connections), which from this timer would end the process.
   */
  arrayBuffers?: () => number;
}

interface BufferCollector {
  /** Collections run so far, by kind. */
  readonly collections: Readonly<Record<CollectionKind, number>>;
  /** Bytes the process moved (an SSH socket's reads and writes); a check runs at once every TRAFFIC_CHECK bytes. */
  traffic(bytes: number): void;
  stop(): void;
}

const MiB = 1024 * 1024;
const DEFAULT_LIMIT = 16 * MiB;
const DEFAULT_BUSY_MS = 25;
const DEFAULT_IDLE_MS = 100;
const MOVING = MiB;
/** Each byte of SSH traffic leaves a few of garbage (the socket read, the packet, its ciphertext). */
const TRAFFIC_CHECK = 2 * MiB;

/** Starts the collector; null when no GC function is available. Its timer never keeps the process alive. */
export function startBufferCollector(opts: BufferCollectorOptions = {}): BufferCollector | null {
  const collect = opts.collect ?? exposedGc();
  if (!collect) return null;
  const limit = opts.limitBytes ?? DEFAULT_LIMIT;
  const minorLimit = limit / 2;
  const busyMs = opts.busyIntervalMs ?? DEFAULT_BUSY_MS;
  const idleMs = opts.idleIntervalMs ?? DEFAULT_IDLE_MS;
  const arrayBuffers = opts.arrayBuffers ?? (() => getHeapStatistics().external_memory);
  const collections = { minor: 0, major: 0 };
  // The live level (stream buffers, SSH windows) is the lowest reading since the last full GC: a full GC is due
  // only above that. A minor GC is due on growth since the lowest reading after the last minor GC, so a live level
  // that rose (more streams, slow readers) does not scavenge at every reading.
  let live = Number.POSITIVE_INFINITY;
  let sinceMinor = Number.POSITIVE_INFINITY;
  let last = 0;
  let timer: NodeJS.Timeout | null = null;

  const check = () => {
    const now = arrayBuffers();
    const moving = Math.abs(now - last) >= MOVING;
    live = Math.min(live, now);
    sinceMinor = Math.min(sinceMinor, now);
    // The level the next reading is compared with: after a collection, what it left. Compared with the reading from
    // before it, garbage that piled up to about the same level again would look steady, and the collector would
    // wait the idle interval while ~100 MB/s more of it piled up.
    last = now;
    if (now - sinceMinor >= minorLimit) {
      collect('minor');
      collections.minor++;
      // With --single-threaded (the agent's flags) the scavenge has freed its Buffers by now; what is still over
      // the limit is old garbage.
      sinceMinor = arrayBuffers();
      last = sinceMinor;
      if (sinceMinor - live >= limit) {
        collect('major');
        collections.major++;
        live = Number.POSITIVE_INFINITY;
        sinceMinor = Number.POSITIVE_INFINITY;
        last = arrayBuffers();
      }
    }
    schedule(moving ? busyMs : idleMs);
  };
  const schedule = (ms: number) => {
    timer = setTimeout(check, ms);
    timer.unref();
  };
  schedule(idleMs);
  let traffic = 0;
  return {
    collections,
    traffic: (bytes: number) => {
      traffic += bytes;
      if (traffic < TRAFFIC_CHECK || timer === null) return;
      traffic = 0;
      clearTimeout(timer);
      check();
    },
    stop: () => {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}

let processCollector: BufferCollector | null = null;

/** The process's one collector with the defaults (started on first call); it watches the process, not one agent. */
export function processBufferCollector(): BufferCollector | null {
  processCollector ??= startBufferCollector();
  return processCollector;
}

function exposedGc(): ((kind: CollectionKind) => void) | null {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== 'function') return null;
  return (kind) => gc({ type: kind });
}
