// Decides which /proc/net tables a scan must read, from the namespace's socket counters (sockstat.ts), and keeps
// each table's rows from its last read. Owns that per-table cache and the skip rules; must not parse tables itself
// (procnet.ts does) nor diff or attribute listeners (poller.ts does).
//
// Reading a table walks a kernel hash shared by all namespaces (tcp6 with no IPv6 connection to stop at walks the
// whole established hash: ~0.5 ms idle here, ~16 ms with 100,000 sockets on the machine), while the counters cost
// microseconds. So a table is read only when its counter is non-zero (zero: the namespace has no such socket, so no
// listener) and
//   - the counter moved since the table was last read (a listener opening or closing always moves it), or
//   - the counter exceeds the listeners last read (the namespace also holds connections of that kind, whose churn
//     could cancel a listener's move in the count) and, for TCP, the namespace's TCP activity (opens, closes,
//     segments) moved since: idle connections cost nothing, busy ones a read per tick (~0.5 ms, mostly the kernel's
//     walk of the listening hash); or
//   - the caller asks for a full scan.
// What still slips past a tick in a listeners-only table: one listener closing and another opening between two ticks,
// or a connection opening as a listener closes; and a bound UDP socket connecting or disconnecting. The caller asks
// for a full read when it notices a known listener closed (liveness.ts); its periodic full scans catch the rest.

import { join } from 'node:path';
import { PROC_NET_TABLES, ProcNetScanner, type ProcNetScannerOptions, type ProcNetTable } from './procnet.js';
import { type SocketCounts, SockstatReader } from './sockstat.js';
import type { Listener } from './types.js';

export interface GatedTableStats {
  file: ProcNetTable['file'];
  /** The table's socket counter at the last scan; null when counters are unavailable. */
  inuse: number | null;
  /** How many times the table was actually read. */
  reads: number;
}

interface TableState {
  table: ProcNetTable;
  path: string;
  rows: Listener[];
  /** Counter value the rows belong to; -1 before the first read. */
  inuse: number;
  /** TCP activity signature when the rows were read. */
  activity: string;
  reads: number;
}

export class GatedScanner {
  private readonly scanner: ProcNetScanner;
  private readonly counters: SockstatReader;
  private readonly tables: TableState[];
  private gated = false;

  constructor(options: ProcNetScannerOptions = {}) {
    const procRoot = options.procRoot ?? '/proc';
    this.scanner = new ProcNetScanner(options);
    this.counters = new SockstatReader(procRoot);
    this.tables = PROC_NET_TABLES.map((table) => ({
      table,
      path: join(procRoot, 'net', table.file),
      rows: [],
      inuse: -1,
      activity: '',
      reads: 0,
    }));
  }

  /**
   * Appends every listening socket to `out`: fresh rows for tables that had to be read, the previous rows for the
   * rest. `full` reads every non-empty table regardless of its counter. Without counters every table is read.
   */
  scan(out: Listener[], full = false): Listener[] {
    const counts = this.counters.read();
    this.gated = counts !== null;
    for (const state of this.tables) {
      const inuse = counts ? (counts[state.table.file as keyof SocketCounts] as number) : -1;
      const activity = counts?.tcpActivity ?? '';
      if (inuse === 0) {
        state.rows = [];
      } else if (full || inuse < 0 || inuse !== state.inuse || this.churned(state, inuse, activity)) {
        const rows: Listener[] = [];
        this.scanner.readTable(state.path, state.table, rows, state.rows.length);
        state.rows = rows;
        state.reads++;
        state.activity = activity;
      }
      state.inuse = inuse;
      for (const row of state.rows) out.push(row);
    }
    return out;
  }

  /** Whether sockets other than the listeners may have come and gone since the table was read. */
  private churned(state: TableState, inuse: number, activity: string): boolean {
    if (inuse <= state.rows.length) return false; // listeners only
    if (state.table.proto === 'udp' || activity === '') return true; // UDP tables are cheap; no signature to trust
    return activity !== state.activity;
  }

  /** Releases the counter files (reopened by the next scan). */
  close(): void {
    this.counters.close();
  }

  /** False when the last scan found no usable counters and so read every table. */
  get counted(): boolean {
    return this.gated;
  }

  stats(): GatedTableStats[] {
    return this.tables.map((s) => ({ file: s.table.file, inuse: s.inuse < 0 ? null : s.inuse, reads: s.reads }));
  }
}
