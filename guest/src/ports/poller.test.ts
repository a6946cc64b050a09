import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ScanTrigger } from './listen-events.js';
import { PortPoller, type ScanDelta, scanOnce } from './poller.js';
import { type Listener, listenerKey } from './types.js';

// Real kernel sockets in whatever network namespace the test runs in; every socket below is bound to loopback or a
// wildcard address and receives no traffic.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listenTcp(host: string, options: { ipv6Only?: boolean; port?: number } = {}): Promise<Server> {
  const server = createServer();
  server.listen({ host, port: options.port ?? 0, ipv6Only: options.ipv6Only });
  await once(server, 'listening');
  cleanups.push(() => closeTcp(server));
  return server;
}

async function closeTcp(server: Server): Promise<void> {
  if (server.listening) await new Promise((resolve) => server.close(resolve));
}

async function bindUdp(type: 'udp4' | 'udp6', address: string): Promise<UdpSocket> {
  const socket = createSocket({ type, ipv6Only: type === 'udp6' });
  socket.bind(0, address);
  await once(socket, 'listening');
  cleanups.push(() => closeUdp(socket));
  return socket;
}

async function closeUdp(socket: UdpSocket): Promise<void> {
  await new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

function portOf(s: Server | UdpSocket): number {
  return (s.address() as AddressInfo).port;
}

/** A poller that reports this process's own sockets, which is what these tests create. */
function newPoller(): PortPoller {
  const poller = new PortPoller({ excludeSelf: false });
  cleanups.push(() => poller.stop());
  return poller;
}

function find(poller: PortPoller, proto: Listener['proto'], ip: string, port: number): Listener | undefined {
  return poller.snapshot().listeners.find((l) => listenerKey(l) === listenerKey({ proto, ip, port }));
}

async function until<T>(what: string, probe: () => T | undefined | null | false, deadlineMs = 10_000): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('PortPoller on real sockets', () => {
  it.each([
    { host: '127.0.0.1', ip: '127.0.0.1', family: 4 },
    { host: '0.0.0.0', ip: '0.0.0.0', family: 4 },
    { host: '::1', ip: '::1', family: 6 },
    { host: '::', ip: '::', family: 6, ipv6Only: true },
    { host: '::', ip: '::', family: 6, ipv6Only: false }, // dual-stack: listed once, in tcp6
    { host: '::ffff:127.0.0.1', ip: '::ffff:127.0.0.1', family: 6 },
  ])(
    'TCP $host (ipv6Only $ipv6Only) appears as $ip and disappears after close',
    async ({ host, ip, family, ipv6Only }) => {
      const poller = newPoller();
      poller.scanNow();
      const server = await listenTcp(host, { ipv6Only });
      const port = portOf(server);

      const delta = poller.scanNow();
      const added = delta?.added.find((l) => l.port === port && l.ip === ip);
      expect(added).toMatchObject({ proto: 'tcp', family, ip, port, uid: process.getuid?.() ?? 0, pid: process.pid });
      expect(added?.inode).toBeGreaterThan(0);
      expect(added?.command).toContain('node');
      expect(find(poller, 'tcp', ip, port)).toBeDefined();

      await closeTcp(server);
      const after = poller.scanNow();
      expect(after?.removed.map(listenerKey)).toContain(`tcp/${ip}/${port}`);
      expect(find(poller, 'tcp', ip, port)).toBeUndefined();
    },
  );

  it.each([
    { type: 'udp4' as const, address: '127.0.0.1', family: 4 },
    { type: 'udp4' as const, address: '0.0.0.0', family: 4 },
    { type: 'udp6' as const, address: '::1', family: 6 },
    { type: 'udp6' as const, address: '::', family: 6 },
  ])('UDP $type $address appears and disappears after close', async ({ type, address, family }) => {
    const poller = newPoller();
    poller.scanNow();
    const socket = await bindUdp(type, address);
    const port = portOf(socket);

    poller.scanNow();
    expect(find(poller, 'udp', address, port)).toMatchObject({ proto: 'udp', family, ip: address, port });

    await closeUdp(socket);
    poller.scanNow();
    expect(find(poller, 'udp', address, port)).toBeUndefined();
  });

  it('merges rows from another source, which a socket at the same address or a changed row replaces', async () => {
    const server = await listenTcp('127.0.0.1');
    const port = portOf(server);
    await closeTcp(server); // a port known to be free for a moment
    const rule = (to: string): Listener => ({
      ...{ proto: 'tcp', family: 4, ip: '127.0.0.1', port, inode: 0, uid: 0, pid: null },
      command: `iptables DNAT to ${to}`,
    });
    let rows = [rule('10.42.0.8:80')];
    const poller = new PortPoller({
      excludeSelf: false,
      sources: [{ start: () => {}, stop: () => {}, listeners: () => rows.map((r) => ({ ...r })) }],
    });
    cleanups.push(() => poller.stop());
    // Other sockets on this machine come and go too: look at this port only.
    const at = (ls: Listener[] | undefined) => (ls ?? []).filter((l) => l.port === port);
    expect(at(poller.scanNow()?.added)).toEqual([rule('10.42.0.8:80')]);
    expect(at(poller.scanNow()?.added)).toEqual([]);

    rows = [rule('10.42.0.9:80')]; // the pod came back with another address
    const moved = poller.scanNow();
    expect(at(moved?.removed).map((l) => l.command)).toEqual(['iptables DNAT to 10.42.0.8:80']);
    expect(at(moved?.added).map((l) => l.command)).toEqual(['iptables DNAT to 10.42.0.9:80']);

    await listenTcp('127.0.0.1', { port }); // a process now listens there itself
    const taken = poller.scanNow();
    expect(at(taken?.added)).toEqual([expect.objectContaining({ port, pid: process.pid })]);
    expect(find(poller, 'tcp', '127.0.0.1', port)?.inode).toBeGreaterThan(0);
  });

  it('does not report a connected UDP socket', async () => {
    const socket = await bindUdp('udp4', '127.0.0.1');
    const port = portOf(socket);
    expect(scanOnce().some((l) => l.proto === 'udp' && l.port === port)).toBe(true);
    socket.connect(9, '127.0.0.1');
    await once(socket, 'connect');
    expect(scanOnce().some((l) => l.proto === 'udp' && l.port === port)).toBe(false);
  });

  it('leaves no stale entry for a listener opened and closed between scans', async () => {
    const poller = newPoller();
    poller.scanNow();
    const server = await listenTcp('127.0.0.1');
    const port = portOf(server);
    await closeTcp(server);
    const delta = poller.scanNow();
    expect(delta?.added.some((l) => l.port === port) ?? false).toBe(false);
    expect(find(poller, 'tcp', '127.0.0.1', port)).toBeUndefined();
  });

  it('reports a socket replaced on the same address as removed and added, on a full scan', async () => {
    // Closing and reopening between two ticks leaves the socket counter unchanged, so only a full scan sees it
    // (gate.test.ts shows the tick missing it); here every scan is a full one.
    const poller = new PortPoller({ excludeSelf: false, minFullScanMs: 0, maxFullScanMs: 0 });
    const first = await listenTcp('127.0.0.1');
    const port = portOf(first);
    poller.scanNow();
    const before = find(poller, 'tcp', '127.0.0.1', port);
    await closeTcp(first);
    await listenTcp('127.0.0.1', { port });
    const delta = poller.scanNow();
    const key = `tcp/127.0.0.1/${port}`;
    expect(delta?.removed.find((l) => listenerKey(l) === key)?.inode).toBe(before?.inode);
    const added = delta?.added.find((l) => listenerKey(l) === key);
    expect(added?.inode).not.toBe(before?.inode);
    expect(find(poller, 'tcp', '127.0.0.1', port)?.inode).toBe(added?.inode);
  });

  it('reports 1,000 new listeners in one delta, and nothing when nothing changed', async () => {
    const poller = newPoller();
    poller.scanNow();
    const servers = await Promise.all(Array.from({ length: 1000 }, () => listenTcp('127.0.0.1')));
    const ports = new Set(servers.map(portOf));

    const seqBefore = poller.snapshot().seq;
    const delta = poller.scanNow();
    expect(delta?.seq).toBe(seqBefore + 1);
    const ours = delta?.added.filter((l) => l.ip === '127.0.0.1' && ports.has(l.port)) ?? [];
    expect(ours).toHaveLength(1000);
    expect(ours.every((l) => l.pid === process.pid)).toBe(true);

    // Other tests' sockets may come and go; ours must not be reported again.
    const again = poller.scanNow();
    expect(again?.added.some((l) => l.ip === '127.0.0.1' && ports.has(l.port)) ?? false).toBe(false);
    // The unsorted view and the count say what the snapshot says.
    const snapshot = poller.snapshot().listeners;
    expect(poller.count).toBe(snapshot.length);
    expect(new Set(poller.currentListeners())).toEqual(new Set(snapshot));

    await Promise.all(servers.map(closeTcp));
    const gone = poller.scanNow();
    expect(gone?.removed.filter((l) => l.ip === '127.0.0.1' && ports.has(l.port))).toHaveLength(1000);
  });

  it('collapses SO_REUSEPORT duplicates into one listener', async () => {
    const a = createSocket({ type: 'udp4', reuseAddr: true });
    const b = createSocket({ type: 'udp4', reuseAddr: true });
    cleanups.push(
      () => closeUdp(a),
      () => closeUdp(b),
    );
    a.bind(0, '127.0.0.1');
    await once(a, 'listening');
    b.bind(portOf(a), '127.0.0.1');
    await once(b, 'listening');
    const matches = scanOnce().filter((l) => l.proto === 'udp' && l.port === portOf(a));
    expect(matches).toHaveLength(1);
  });

  const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p));
  it.skipIf(!python)('attributes a child process listener to its pid and command line', async () => {
    const probe = await listenTcp('127.0.0.1');
    const port = portOf(probe);
    await closeTcp(probe);
    const child: ChildProcess = spawn(python as string, ['-m', 'http.server', '--bind', '127.0.0.1', String(port)], {
      stdio: 'ignore',
    });
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill();
        await once(child, 'exit');
      }
    });

    const poller = new PortPoller({ excludeSelf: true });
    const listener = await until('http.server to listen', () => {
      poller.scanNow();
      return find(poller, 'tcp', '127.0.0.1', port);
    });
    expect(listener.pid).toBe(child.pid);
    expect(listener.command).toContain('http.server');
    expect(listener.command).toContain(String(port));
  });

  it('excludes its own process listeners when excludeSelf is on, and inodes from excludeInodes', async () => {
    const own = await listenTcp('127.0.0.1');
    const ownPort = portOf(own);
    const other = await listenTcp('127.0.0.1');
    const otherPort = portOf(other);
    const otherInode = scanOnce().find((l) => l.port === otherPort)?.inode;
    expect(otherInode).toBeGreaterThan(0);

    const excluding = new PortPoller({ excludeSelf: true });
    excluding.scanNow();
    expect(find(excluding, 'tcp', '127.0.0.1', ownPort)).toBeUndefined();
    expect(excluding.scanNow()?.added.some((l) => l.port === ownPort) ?? false).toBe(false);

    const byInode = new PortPoller({ excludeSelf: false, excludeInodes: () => new Set([otherInode as number]) });
    byInode.scanNow();
    expect(find(byInode, 'tcp', '127.0.0.1', ownPort)).toBeDefined();
    expect(find(byInode, 'tcp', '127.0.0.1', otherPort)).toBeUndefined();

    const including = newPoller();
    including.scanNow();
    expect(find(including, 'tcp', '127.0.0.1', ownPort)?.pid).toBe(process.pid);
  });

  it('emits deltas from its own timer once started', async () => {
    const poller = newPoller();
    const deltas: ScanDelta[] = [];
    poller.on('delta', (d) => deltas.push(d));
    poller.start();
    cleanups.push(() => poller.stop());
    await until('first scan', () => poller.stats().scans > 0);
    const server = await listenTcp('::1');
    const port = portOf(server);
    const delta = await until('a delta with the new listener', () =>
      deltas.find((d) => d.added.some((l) => l.ip === '::1' && l.port === port)),
    );
    expect(delta.seq).toBeLessThanOrEqual(poller.snapshot().seq);
    expect(deltas.map((d) => d.seq)).toEqual(deltas.map((_, i) => i + 1));
    poller.stop();
    expect(poller.running).toBe(false);
  });
});

describe('PortPoller interval adaptation', () => {
  // A proc tree whose namespace has no sockets: no listener ever appears, so nothing but the clock decides the cost.
  let procRoot: string;
  beforeEach(() => {
    procRoot = mkdtempSync(join(tmpdir(), 'tether-poller-'));
    mkdirSync(join(procRoot, 'net'));
    writeFileSync(join(procRoot, 'net', 'sockstat'), 'TCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\nUDP: inuse 0 mem 0\n');
  });
  afterEach(() => rmSync(procRoot, { recursive: true, force: true }));

  function fakeClock(costMs: { value: number; now?: number }): () => number {
    let calls = 0;
    // Called once before and once after each scan: the gap between them is the scan's cost.
    return () => {
      costMs.now ??= 0;
      if (calls++ % 2 === 1) costMs.now += costMs.value;
      return costMs.now;
    };
  }

  it('grows the interval when scans are expensive and relaxes it when they get cheap', () => {
    const cost = { value: 5 };
    const poller = new PortPoller({
      procRoot,
      clock: fakeClock(cost),
      now: () => 0, // no full scan after the first
      minIntervalMs: 100,
      maxIntervalMs: 2000,
    });
    poller.scanNow(); // the first scan is a full scan: paced on its own, not counted in the tick cost
    expect(poller.stats()).toMatchObject({ intervalMs: 100, lastScanMs: 5, scans: 1 });
    const intervals: number[] = [];
    for (let i = 0; i < 12; i++) {
      poller.scanNow();
      intervals.push(poller.stats().intervalMs);
    }
    expect(poller.stats().lastScanMs).toBe(5);
    // 5 ms per scan at 1% of a core asks for 500 ms between scans; smoothing approaches it from below.
    expect(intervals[0]).toBeGreaterThan(100);
    for (let i = 1; i < intervals.length; i++) expect(intervals[i]).toBeGreaterThan(intervals[i - 1]);
    expect(intervals[11]).toBeGreaterThan(450);
    expect(intervals[11]).toBeLessThanOrEqual(500);

    cost.value = 0.125;
    const slow = poller.stats().intervalMs;
    poller.scanNow();
    expect(poller.stats().intervalMs).toBeLessThan(slow);
    for (let i = 0; i < 50; i++) poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 100, lastScanMs: 0.125, scans: 64 });
  });

  it('caps the interval at the maximum', () => {
    const poller = new PortPoller({ procRoot, clock: fakeClock({ value: 50 }), now: () => 0, maxIntervalMs: 2000 });
    poller.scanNow();
    poller.scanNow();
    poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 2000, lastScanMs: 50, scans: 3 });
  });

  it('stays at the minimum interval when scans are cheap', () => {
    const poller = new PortPoller({ procRoot, clock: fakeClock({ value: 0.1 }), now: () => 0, minIntervalMs: 100 });
    for (let i = 0; i < 10; i++) {
      poller.scanNow();
      expect(poller.stats().intervalMs).toBe(100);
    }
  });

  it('paces full scans on their own cost, without slowing the ticks', () => {
    const clock = { value: 0.125, now: 0 };
    const poller = new PortPoller({
      procRoot,
      clock: fakeClock(clock),
      now: () => clock.now,
      minFullScanMs: 1000,
      maxFullScanMs: 10_000,
    });
    poller.scanNow(); // full, at t=0
    for (let i = 0; i < 5; i++) poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 100, fullScanIntervalMs: 1000, lastFullScanMs: 0 });

    clock.now += 1000;
    clock.value = 40; // a full scan costing 40 ms at 1% of a core: the next one 4 s later
    poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 100, fullScanIntervalMs: 4000, lastFullScanMs: 40 });

    clock.value = 0.125;
    clock.now += 1000; // not due yet: a tick, which stays cheap
    poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 100, lastScanMs: 0.125, lastFullScanMs: 40 });

    clock.now += 3000;
    poller.scanNow();
    expect(poller.stats()).toMatchObject({ intervalMs: 100, fullScanIntervalMs: 1000, lastFullScanMs: 0.125 });
  });

  it('relaxes the tick interval through full scans when slow ticks have all become full scans', () => {
    const clock = { value: 50, now: 0 };
    const poller = new PortPoller({ procRoot, clock: fakeClock(clock), now: () => clock.now, maxIntervalMs: 2000 });
    poller.scanNow(); // full
    poller.scanNow();
    poller.scanNow();
    expect(poller.stats().intervalMs).toBe(2000);
    clock.value = 0.125;
    for (let i = 0; i < 30; i++) {
      clock.now += poller.stats().intervalMs;
      poller.scanNow();
    }
    expect(poller.stats().intervalMs).toBe(100);
  });
  describe('wake-ups', () => {
    // Fake timers, and the poller's clock moved with them: which scan runs when is exact.
    let t = 0;
    let wake: () => void = () => {};
    const trigger: ScanTrigger & { started: number; stopped: number } = {
      started: 0,
      stopped: 0,
      start(w) {
        this.started++;
        wake = w;
      },
      stop() {
        this.stopped++;
      },
    };
    const advance = (ms: number) => {
      t += ms;
      vi.advanceTimersByTime(ms);
    };
    beforeEach(() => {
      vi.useFakeTimers();
      t = 0;
      trigger.started = 0;
      trigger.stopped = 0;
    });
    afterEach(() => vi.useRealTimers());

    function poller(costMs: number): PortPoller {
      const cost = { value: costMs };
      const p = new PortPoller({
        procRoot,
        clock: fakeClock(cost),
        now: () => t,
        minFullScanMs: 1e9,
        maxIntervalMs: 60_000,
        triggers: [trigger],
      });
      p.start();
      advance(0); // the first scan, at once
      expect(p.stats().scans).toBe(1);
      expect(trigger.started).toBe(1);
      return p;
    }

    it('pulls the next tick forward to a couple of milliseconds after the event', () => {
      const p = poller(0.1);
      advance(50); // the next tick is due at 100
      wake();
      advance(1);
      expect(p.stats().scans).toBe(1);
      advance(1);
      expect(p.stats()).toMatchObject({ scans: 2, wakes: 1 });
      // Ticks go on from the pulled one: the next one 100 ms after it.
      advance(99);
      expect(p.stats().scans).toBe(2);
      advance(1);
      expect(p.stats()).toMatchObject({ scans: 3, wakes: 1 });
      p.stop();
    });

    it('takes one wake-up for a burst of events, and none when the tick is due sooner anyway', () => {
      const p = poller(0.1);
      advance(50);
      for (let i = 0; i < 20; i++) wake();
      advance(2);
      expect(p.stats()).toMatchObject({ scans: 2, wakes: 1 });
      advance(99); // 1 ms before the next tick
      wake();
      advance(1);
      expect(p.stats()).toMatchObject({ scans: 3, wakes: 1 });
      p.stop();
    });

    it('keeps pulled ticks within their own CPU budget when ticks are expensive', () => {
      const p = poller(10);
      // Let the tick cost settle near 10 ms, and stop right after a tick.
      for (let i = 0; i < 30; i++) {
        const scans = p.stats().scans;
        while (p.stats().scans === scans) advance(1);
      }
      const before = p.stats();
      expect(before.intervalMs).toBeGreaterThan(900); // 10 ms at 1 % of a core
      wake(); // right after a tick: the pulled one comes about 10 ms / 5 % = 200 ms after it
      advance(190);
      expect(p.stats().scans).toBe(before.scans);
      advance(11);
      expect(p.stats()).toMatchObject({ scans: before.scans + 1, wakes: 1 });
      p.stop();
    });

    it('stops its triggers with it and ignores a wake-up after', () => {
      const p = poller(0.1);
      p.stop();
      expect(trigger.stopped).toBe(1);
      wake();
      advance(1000);
      expect(p.stats()).toMatchObject({ scans: 1, wakes: 0 });
    });
  });
});
