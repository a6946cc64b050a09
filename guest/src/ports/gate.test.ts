import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { GatedScanner } from './gate.js';
import { SockstatReader } from './sockstat.js';
import type { Listener } from './types.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function newScanner(options: { procRoot: string }): GatedScanner {
  const scanner = new GatedScanner(options);
  cleanups.push(() => scanner.close());
  return scanner;
}

function readsOf(scanner: GatedScanner): Record<string, number> {
  return Object.fromEntries(scanner.stats().map((t) => [t.file, t.reads]));
}

function ports(rows: Listener[]): string[] {
  return rows.map((l) => `${l.proto}${l.family}/${l.ip}/${l.port}`);
}

// ── decisions, on a fixture proc tree ─────────────────────────────────────────────────────────────────────────────

describe('GatedScanner on a fixture /proc', () => {
  const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
  const row = (local: string, inode: number) =>
    `   0: ${local} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0 100 0 0 10 0`;

  function fixture(): { root: string; write: (file: string, text: string) => void } {
    const root = mkdtempSync(join(tmpdir(), 'tether-gate-'));
    mkdirSync(join(root, 'net'));
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));
    const write = (file: string, text: string) => writeFileSync(join(root, 'net', file), text);
    write('tcp', `${HEADER}\n${row('0100007F:1F90', 11)}\n`); // 127.0.0.1:8080
    write('tcp6', `${HEADER}\n`);
    write('udp', `${HEADER}\n`);
    write('udp6', `${HEADER}\n`);
    return { root, write };
  }
  const counts = (tcp: number, tcp6 = 0, udp = 0, udp6 = 0) => ({
    v4: `sockets: used 9\nTCP: inuse ${tcp} orphan 0 tw 0 alloc 3 mem 1\nUDP: inuse ${udp} mem 0\nUDPLITE: inuse 0\n`,
    v6: `TCP6: inuse ${tcp6}\nUDP6: inuse ${udp6}\nUDPLITE6: inuse 0\n`,
  });
  function setCounts(write: (f: string, t: string) => void, c: { v4: string; v6: string }): void {
    write('sockstat', c.v4);
    write('sockstat6', c.v6);
  }

  it('parses the per-namespace counters, and treats a missing sockstat6 as no IPv6 sockets', () => {
    const { root, write } = fixture();
    setCounts(write, counts(3, 2, 1, 4));
    expect(new SockstatReader(root).read()).toEqual({ tcp: 3, tcp6: 2, udp: 1, udp6: 4, tcpActivity: '' });
    rmSync(join(root, 'net', 'sockstat6'));
    expect(new SockstatReader(root).read()).toEqual({ tcp: 3, tcp6: 0, udp: 1, udp6: 0, tcpActivity: '' });
    write('sockstat', 'garbage\n');
    expect(new SockstatReader(root).read()).toBeNull();
  });

  it('skips tables whose counter is zero, re-reads only on a counter change, and reads all on a full scan', () => {
    const { root, write } = fixture();
    setCounts(write, counts(1));
    const scanner = newScanner({ procRoot: root });
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8080']);
    expect(readsOf(scanner)).toEqual({ tcp: 1, tcp6: 0, udp: 0, udp6: 0 });

    // The table changes but its counter does not: a tick keeps the previous rows without reading.
    write('tcp', `${HEADER}\n${row('0100007F:1F91', 12)}\n`);
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8080']);
    expect(readsOf(scanner).tcp).toBe(1);
    // A full scan reads it anyway.
    expect(ports(scanner.scan([], true))).toEqual(['tcp4/127.0.0.1/8081']);
    expect(readsOf(scanner)).toEqual({ tcp: 2, tcp6: 0, udp: 0, udp6: 0 });

    // A moved counter makes a tick read.
    write('tcp', `${HEADER}\n${row('0100007F:1F91', 12)}\n${row('0100007F:1F92', 13)}\n`);
    setCounts(write, counts(2));
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8081', 'tcp4/127.0.0.1/8082']);
    expect(readsOf(scanner).tcp).toBe(3);

    // A zero counter empties the table without reading it, even on a full scan.
    setCounts(write, counts(0));
    expect(scanner.scan([], true)).toEqual([]);
    expect(readsOf(scanner)).toEqual({ tcp: 3, tcp6: 0, udp: 0, udp6: 0 });
    expect(scanner.counted).toBe(true);
  });

  it('re-reads a table holding connections when TCP activity moved, not while the connections idle', () => {
    const { root, write } = fixture();
    setCounts(write, counts(3)); // one listener in the table, two more sockets (a connection's two ends)
    const snmp = (inSegs: number) =>
      write('snmp', `Tcp: RtoAlgorithm ActiveOpens InSegs\nTcp: 1 5 ${inSegs}\nUdp: InDatagrams\nUdp: 0\n`);
    snmp(100);
    const scanner = newScanner({ procRoot: root });
    scanner.scan([]);
    // A listener replaced while a connection closed and another opened: the counter is unchanged.
    write('tcp', `${HEADER}\n${row('0100007F:1F91', 12)}\n`);
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8080']); // activity unchanged: idle, not read
    expect(readsOf(scanner).tcp).toBe(1);
    snmp(104);
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8081']);
    expect(readsOf(scanner).tcp).toBe(2);
    // Without the activity signature, such a table is read every tick.
    rmSync(join(root, 'net', 'snmp'));
    const blind = newScanner({ procRoot: root });
    blind.scan([]);
    blind.scan([]);
    expect(readsOf(blind).tcp).toBe(2);
  });

  it('reads every table on every scan when the counters are unavailable', () => {
    const { root } = fixture();
    const scanner = newScanner({ procRoot: root });
    scanner.scan([]);
    expect(ports(scanner.scan([]))).toEqual(['tcp4/127.0.0.1/8080']);
    expect(readsOf(scanner)).toEqual({ tcp: 2, tcp6: 2, udp: 2, udp6: 2 });
    expect(scanner.counted).toBe(false);
    expect(scanner.stats().every((t) => t.inuse === null)).toBe(true);
  });
});

// ── real sockets in a private network namespace ───────────────────────────────────────────────────────────────────

/** True when a fresh network namespace can be made here; under CI a missing capability is a failure, not a skip. */
function canUnshareNet(): boolean {
  const reason = process.getuid?.() !== 0 ? 'needs root to create a network namespace' : null;
  if (reason === null) return true;
  if (process.env.CI === 'true') throw new Error(`gate namespace test cannot run under CI: ${reason}`);
  console.warn(`skipping the gate namespace test: ${reason}`);
  return false;
}

// Opens and closes TCP listeners on command, one per stdin line: `open HOST` answers the port, `close PORT` answers
// `closed`.
const HELPER = `
const net = require('node:net');
const servers = new Map();
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ');
  if (cmd === 'open') {
    const s = net.createServer().listen({ host: arg, port: 0 }, () => {
      servers.set(s.address().port, s);
      console.log(s.address().port);
    });
  } else if (cmd === 'close') {
    const s = servers.get(Number(arg));
    servers.delete(Number(arg));
    s.close(() => console.log('closed'));
  }
});
console.log('ready');
`;

interface NamespaceHelper {
  /** /proc/<pid> of a process inside the namespace: its net/ files are the namespace's own. */
  procRoot: string;
  send(line: string): Promise<string>;
}

async function startNamespaceHelper(): Promise<NamespaceHelper> {
  const child: ChildProcess = spawn(
    'unshare',
    ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$0" -e "$1"', process.execPath, HELPER],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await once(child, 'exit');
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`namespace helper (pid ${child.pid}) exited early`);
    return value as string;
  };
  expect(await next()).toBe('ready');
  return {
    procRoot: `/proc/${child.pid}`,
    send: (line) => {
      child.stdin!.write(`${line}\n`);
      return next();
    },
  };
}

describe.skipIf(!canUnshareNet())('GatedScanner in a private network namespace (real sockets)', () => {
  it('reads nothing in an empty namespace, only the table of a new listener, and a same-count swap on full scans', async () => {
    const ns = await startNamespaceHelper();
    // The counters are per namespace: this one has no sockets, whatever the rest of the machine holds.
    expect(new SockstatReader(ns.procRoot).read()).toMatchObject({ tcp: 0, tcp6: 0, udp: 0, udp6: 0 });
    expect(new SockstatReader(ns.procRoot).read()?.tcpActivity).toMatch(/^Tcp: [-\d ]+$/);
    const scanner = newScanner({ procRoot: ns.procRoot });
    expect(scanner.scan([], true)).toEqual([]);
    expect(readsOf(scanner)).toEqual({ tcp: 0, tcp6: 0, udp: 0, udp6: 0 });

    const v6 = Number(await ns.send('open ::1'));
    expect(new SockstatReader(ns.procRoot).read()).toMatchObject({ tcp: 0, tcp6: 1 });
    expect(ports(scanner.scan([]))).toEqual([`tcp6/::1/${v6}`]);
    expect(readsOf(scanner)).toEqual({ tcp: 0, tcp6: 1, udp: 0, udp6: 0 });

    const first = Number(await ns.send('open 127.0.0.1'));
    expect(ports(scanner.scan([]))).toEqual([`tcp4/127.0.0.1/${first}`, `tcp6/::1/${v6}`]);
    expect(readsOf(scanner)).toEqual({ tcp: 1, tcp6: 1, udp: 0, udp6: 0 });

    // Close one and open another between two ticks: the counter is back where it was, so a tick cannot tell.
    expect(await ns.send(`close ${first}`)).toBe('closed');
    const second = Number(await ns.send('open 127.0.0.1'));
    expect(ports(scanner.scan([]))).toEqual([`tcp4/127.0.0.1/${first}`, `tcp6/::1/${v6}`]);
    expect(ports(scanner.scan([], true))).toEqual([`tcp4/127.0.0.1/${second}`, `tcp6/::1/${v6}`]);
  });
});
