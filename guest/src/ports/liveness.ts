// Notices that a known listener has closed without reading a /proc/net table: each attributed listener was found as
// /proc/<pid>/fd/<fd> → socket:[inode], and one readlink tells whether that link still names it. Owns the
// round-robin over listeners and how many are probed per tick; the poller decides what a closed listener means
// (it reads the tables).
//
// Why: the table gate (gate.ts) sees a listener come or go by its socket counter, but a server that closes one port
// and listens on another within one tick (a dev server hopping ports) leaves the counter where it was, and only the
// next full scan, seconds later, saw the new port. Reading a TCP table costs ~0.9 ms here even in an empty
// namespace (the kernel walks the machine-wide established hash), a readlink a few µs.

import { socketAt } from './attribution.js';
import type { Listener } from './types.js';

/** Readlinks per tick at most: a tick stays cheap however many listeners there are; a hop among few is seen at once. */
const PROBES_PER_TICK = 16;

export class ListenerProbe {
  private cursor = 0;

  constructor(
    private readonly procRoot = '/proc',
    private readonly perTick = PROBES_PER_TICK,
  ) {}

  /** The first of the next `perTick` probeable listeners whose socket is no longer at its descriptor, or null. */
  gone(listeners: readonly Listener[]): Listener | null {
    const n = listeners.length;
    if (n === 0) return null;
    const count = Math.min(n, this.perTick);
    for (let i = 0; i < count; i++) {
      if (this.cursor >= n) this.cursor = 0;
      const l = listeners[this.cursor++];
      if (l.fd === undefined || l.pid === null) continue;
      if (socketAt(l.pid, l.fd, this.procRoot) !== l.inode) return l;
    }
    return null;
  }
}
