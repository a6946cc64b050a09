// ForwardEngine against real host sockets and a fake SSH session whose channels are connections to a local echo server:
// reconcile after a snapshot (no duplicates, gone ones removed), suspension keeps listeners, the cap warns once,
// every state change is logged once, and a host port serves one guest port at a time.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { existsSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Listener, Peer } from '@tether/protocol';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { PortForward } from '../config/schema.js';
import type { ForwardView } from '../model.js';
import type { ChannelSink, GuestChannel } from '../ssh/direct-channel.js';
import { ChannelOpenError, type SshSession } from '../ssh/index.js';
import { ForwardEngine } from './engine.js';

const lines: { msg: string; level: number; forward?: string; state?: string }[] = [];
const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });

let echoPort = 0;
/** The guest ports connections were sent to, in order. */
const dialed: number[] = [];
/** The guest addresses channel opens asked for, refused ones included, in order. */
const tried: string[] = [];
/** Guest addresses whose connections the "guest" refuses, as sshd reports a refused connect. */
const refusing = new Set<string>();
/** Guest ports the "guest's sshd" may not open channels to (AllowTcpForwarding no, PermitOpen). */
const prohibited = new Set<number>();
/**
 * A "channel" that is a plain connection to the echo server, delivering to the sink as a DirectChannel would; every
 * guest socket listens (its probe opens and closes at once).
 */
/** Guest ports whose channel opens wait until the test refuses them (refuseHeld). */
const holding = new Set<number>();
const held: (() => void)[] = [];
const refusal = () => {
  const cause = Object.assign(new Error('(SSH) Channel open failure: Connection refused'), { reason: 2 });
  return new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause);
};
const fakeSsh = {
  openStreamLocal: async () => ({ destroy: () => {} }),
  openDirect: (target: { dstIP: string; dstPort: number }, sink: ChannelSink) =>
    new Promise<GuestChannel>((resolve, reject) => {
      tried.push(target.dstIP);
      if (holding.has(target.dstPort)) {
        held.push(() => reject(refusal()));
        return;
      }
      if (refusing.has(target.dstIP)) {
        const cause = Object.assign(new Error('(SSH) Channel open failure: Connection refused'), { reason: 2 });
        reject(new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause));
        return;
      }
      if (prohibited.has(target.dstPort)) {
        const cause = Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason: 1 });
        reject(new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause));
        return;
      }
      dialed.push(target.dstPort);
      const s = net.connect({ host: '127.0.0.1', port: echoPort, allowHalfOpen: true }, () =>
        resolve({
          write: (chunk) => s.write(chunk),
          end: () => s.end(),
          close: () => s.destroy(),
          resume: () => s.resume(),
          flush: () => undefined,
        }),
      );
      s.once('error', reject);
      s.on('data', (d: Buffer) => {
        if (!sink.data(d)) s.pause();
      });
      s.on('drain', () => sink.drain());
      s.on('end', () => sink.end());
      s.on('close', () => sink.close(false));
    }),
} as unknown as SshSession;

/** Resolves once `ok()` holds (polling, as the engine settles asynchronously). */
const waitUntil = (ok: () => boolean) =>
  vi.waitFor(() => {
    if (!ok()) throw new Error('not yet');
  });

/** A host program holding `port` on `host`. */
async function holdPort(port: number, host: string): Promise<net.Server> {
  const held = net.createServer();
  await new Promise<void>((resolve) => held.listen(port, host, resolve));
  return held;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const tcp = (ip: string, port: number): Listener => ({
  proto: 'tcp',
  family: ip.includes(':') ? 6 : 4,
  ip,
  port,
  pid: 42,
  command: 'srv',
});

function echo(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const s = net.connect({ host, port }, () => s.end('hi'));
    s.on('data', (d) => {
      out += d;
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

/** Echoes through host `port` while the guest's 127.0.0.1 refuses; resolves with the guest addresses tried. */
async function triedWhile127Refuses(port: number): Promise<string[]> {
  refusing.add('127.0.0.1');
  tried.length = 0;
  try {
    expect(await echo(port)).toBe('hi');
    return [...tried];
  } finally {
    refusing.clear();
  }
}

describe('ForwardEngine', () => {
  let engine: ForwardEngine;
  beforeAll(async () => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    server.unref();
    echoPort = (server.address() as net.AddressInfo).port;
  });
  afterEach(async () => {
    await engine?.stop();
    lines.length = 0;
  });

  const make = (maxForwards = 4096, hostSshPort?: number) =>
    new ForwardEngine({ ssh: fakeSsh, portForwards: [], maxForwards, instanceDir: '/tmp', logger, hostSshPort });

  /** A new engine with a detected 0.0.0.0 listener and one open host connection through its forward. */
  async function detectedWithConnection() {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const held = net.connect({ host: '127.0.0.1', port });
    await once(held, 'connect');
    return { port, id: `tcp/0.0.0.0:${port}`, held };
  }

  it("refuses to add a forward onto the host port of the VM's SSH, on any loopback or wildcard address", async () => {
    engine = make(4096, 2222);
    for (const hostIP of [undefined, '127.0.0.1', '::1', '0.0.0.0']) {
      await expect(engine.add({ proto: 'tcp', hostIP, hostPort: 2222, guestPort: 3000 })).rejects.toMatchObject({
        name: 'ForwardRefusedError',
        message:
          "host port 2222 is where this host reaches the VM's sshd (ssh.port): forward guest port 3000 to another host port",
      });
    }
    expect(engine.views()).toEqual([]);
  });

  it("refuses to add a socket forward onto one of the instance's own files, such as its control socket", async () => {
    engine = make();
    await expect(
      engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: '/tmp/./ha.sock' }),
    ).rejects.toMatchObject({
      name: 'ForwardRefusedError',
      message: "host socket /tmp/./ha.sock is instance tmp's control socket: pick another path",
    });
    expect(engine.views()).toEqual([]);
  });

  it('stops naming the lost SSH connection once it is back, while the guest agent link is still down', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const udp = await engine.add({ proto: 'udp', hostPort: await freePort(), guestPort: 5353 });
    const id = `tcp/127.0.0.1:${port}`;
    engine.setSshDown('Keepalive timeout');
    engine.suspendDetected('ssh connection lost: Keepalive timeout');
    expect(engine.view(id)).toMatchObject({
      state: 'suspended',
      error: 'ssh connection down: Keepalive timeout',
      cause: 'ssh-down',
    });
    engine.setSshDown(null);
    const waiting = 'agent link down: waiting for the guest agent (the SSH connection is back)';
    expect(engine.view(id)).toMatchObject({ state: 'suspended', error: waiting, cause: 'link-down' });
    expect(engine.view(udp.id)).toMatchObject({ state: 'suspended', error: waiting });
    // The link's own later reason still replaces it.
    engine.suspendDetected('guest socket refused');
    expect(engine.view(id)?.error).toBe(
      'agent link down: guest socket refused; its connections still go through SSH, and ports opened or closed meanwhile show once it is back',
    );
  });

  it('reconciles a fresh snapshot after suspension: kept forwards keep their listeners, gone ones close', async () => {
    engine = make();
    const [a, b] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('0.0.0.0', b), tcp('::', b)]);
    // Listed by guest port, then id.
    const byPort = [
      [a, [`tcp/127.0.0.1:${a} forwarding`]],
      [b, [`tcp/0.0.0.0:${b} forwarding`, `tcp/[::]:${b} forwarding`].sort((x, y) => x.localeCompare(y))],
    ] as const;
    expect(engine.views().map((v) => `${v.id} ${v.state}`)).toEqual(
      [...byPort].sort((x, y) => x[0] - y[0]).flatMap(([, rows]) => rows),
    );
    expect(await echo(a)).toBe('hi');

    engine.suspendDetected('test');
    expect(engine.views().every((v) => v.state === 'suspended')).toBe(true);
    expect(await echo(a)).toBe('hi'); // listeners stay bound while suspended

    await engine.setListeners([tcp('127.0.0.1', a)]);
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[`tcp/127.0.0.1:${a}`, 'forwarding']]);
    expect(await echo(a)).toBe('hi');
    await expect(echo(b)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const forwardingLogs = lines.filter((l) => l.msg.includes(`127.0.0.1:${a}`) && l.msg.endsWith(': forwarding'));
    expect(forwardingLogs).toHaveLength(2); // once at creation, once after resuming
  });

  it('listens on 127.0.0.1 alone, with no error, on a host without ::1 (IPv6 turned off)', async () => {
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
      loopbacks: ['127.0.0.1'],
    });
    expect(lines.map((l) => l.msg)).toContain(
      'this host has no IPv6 loopback (::1): forwards that name no host address listen on 127.0.0.1 only',
    );
    const [port, hostPort] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('0.0.0.0', port)]);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({
      hostAddrs: [`127.0.0.1:${port}`],
      state: 'forwarding',
      error: null,
    });
    expect(await echo(port)).toBe('hi');
    const added = await engine.add({ proto: 'udp', hostPort, guestPort: 5353 });
    expect(added.hostAddrs).toEqual([`127.0.0.1:${hostPort}`]);
  });

  it('folds a detected listener into a forward added later for its port: one row, with its process', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([{ ...tcp('0.0.0.0', port), pid: 9, command: 'vite' }]);
    expect(engine.views().map((v) => v.source)).toEqual(['detected']);
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.process?.command])).toEqual([[added.id, 'runtime', 'vite']]);
    expect(await echo(port)).toBe('hi');
  });

  it('shows the process of the listener an added forward replaces under the same id (guest 127.0.0.1, same port)', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([{ ...tcp('127.0.0.1', port), pid: 11, command: 'python3 -m http.server' }]);
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(added.id).toBe(`tcp/127.0.0.1:${port}`);
    expect(engine.views().map((v) => [v.id, v.source, v.process?.command])).toEqual([
      [added.id, 'runtime', 'python3 -m http.server'],
    ]);
  });

  it('keeps the host addresses an added forward does not take for the detected listener, and restores them all', async () => {
    engine = make();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([{ ...tcp('0.0.0.0', port), pid: 9, command: 'vite' }]);
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs, v.process?.command])).toEqual([
      [detected, 'detected', [`[::1]:${port}`], 'vite'],
      [added.id, 'runtime', [`127.0.0.1:${port}`], 'vite'],
    ]);
    expect(await echo(port, '::1')).toBe('hi');
    expect(await echo(port)).toBe('hi');
    await engine.remove(added.id);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`127.0.0.1:${port}`, `[::1]:${port}`]],
    ]);
    expect(await echo(port)).toBe('hi');
  });

  it('keeps the other host address for a listener on 127.0.0.1 when an added forward takes 127.0.0.1', async () => {
    engine = make();
    const port = await freePort();
    const detected = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(added.id).toBe(`tcp/127.0.0.1:${port}->127.0.0.1:${port}`);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`[::1]:${port}`]],
      [added.id, 'runtime', [`127.0.0.1:${port}`]],
    ]);
    expect(await echo(port, '::1')).toBe('hi');
    await engine.remove(added.id);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`127.0.0.1:${port}`, `[::1]:${port}`]],
    ]);
  });

  it('shows on each of two guest listeners of one port (127.0.0.1 and ::1) the host address that reaches it', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port), { ...tcp('::1', port), pid: 43 }]);
    const rows = () => engine.views().map((v) => [v.id, v.hostAddrs]);
    expect(rows()).toEqual([
      [`tcp/[::1]:${port}`, [`[::1]:${port}`]],
      [`tcp/127.0.0.1:${port}`, [`127.0.0.1:${port}`]],
    ]);
    tried.length = 0;
    expect(await echo(port)).toBe('hi');
    expect(await echo(port, '::1')).toBe('hi');
    expect(tried).toEqual(['127.0.0.1', '::1']);
    // With one of them gone, the other is reached from both, and watchers hear of it.
    const changes: ForwardView[] = [];
    engine.on('change', (v: ForwardView) => changes.push(v));
    await engine.setListeners([tcp('127.0.0.1', port)]);
    expect(rows()).toEqual([[`tcp/127.0.0.1:${port}`, [`127.0.0.1:${port}`, `[::1]:${port}`]]]);
    expect(changes.at(-1)).toMatchObject({
      id: `tcp/127.0.0.1:${port}`,
      hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    });
  });

  it('keeps both detected listeners of a port listed when an added forward takes one host address', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port), { ...tcp('::', port), pid: 43 }]);
    const added = await engine.add({ proto: 'tcp', hostIP: '::1', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [`tcp/[::]:${port}`, 'detected', [`127.0.0.1:${port}`]],
      [`tcp/0.0.0.0:${port}`, 'detected', [`127.0.0.1:${port}`]],
      [added.id, 'runtime', [`[::1]:${port}`]],
    ]);
    expect(await echo(port)).toBe('hi');
    expect(await echo(port, '::1')).toBe('hi');
  });

  it('does not report a refused connection of a forward removed while its channel was opening', async () => {
    engine = make();
    const port = await freePort();
    holding.add(port);
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      const client = net.connect({ host: '127.0.0.1', port });
      client.on('error', () => undefined);
      await waitUntil(() => held.length === 1);
      await engine.setListeners([]); // the server went; the open in flight is refused after
      held.shift()?.();
      await new Promise<void>((r) => client.once('close', () => r()));
      expect(lines.filter((l) => l.msg.startsWith('cannot forward a connection'))).toEqual([]);
    } finally {
      holding.delete(port);
    }
  });

  it('gives a listener whose process changed a new since (a restarted server, a rebooted guest)', async () => {
    engine = make();
    const port = await freePort();
    const id = `udp/127.0.0.1:${port}`;
    const udp = (pid: number): Listener => ({ ...tcp('127.0.0.1', port), proto: 'udp', pid });
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(new Date('2026-01-01T00:00:00Z'));
      await engine.setListeners([udp(193)]);
      expect(engine.view(id)?.since).toBe('2026-01-01T00:00:00.000Z');
      vi.setSystemTime(new Date('2026-01-01T00:28:00Z'));
      await engine.setListeners([udp(193)]);
      expect(engine.view(id)?.since).toBe('2026-01-01T00:00:00.000Z');
      await engine.setListeners([udp(211)]);
      expect(engine.view(id)).toMatchObject({ since: '2026-01-01T00:28:00.000Z', process: { pid: 211 } });
    } finally {
      vi.useRealTimers();
    }
  });

  it('keeps an added UDP forward suspended while the agent link is down: the link carries its datagrams', async () => {
    engine = make();
    const port = await freePort();
    const added = await engine.add({ proto: 'udp', hostPort: port, guestPort: 5353 });
    expect(added).toMatchObject({ state: 'suspended', error: 'agent link not up yet' });
    const fakePeer = () => Object.assign(new EventEmitter(), { onEvent: () => undefined });
    engine.attachPeer(fakePeer() as unknown as Peer);
    expect(engine.view(added.id)).toMatchObject({ state: 'forwarding', error: null });
    engine.suspendDetected('channel closed');
    expect(engine.view(added.id)).toMatchObject({ state: 'suspended', error: 'agent link down: channel closed' });
    // A link that closes before it is up (its setup timed out) reports no `down`: its peer closing is enough.
    const peer = fakePeer();
    engine.attachPeer(peer as unknown as Peer);
    expect(engine.view(added.id)?.state).toBe('forwarding');
    peer.emit('close', 'no reply to ports.subscribe');
    expect(engine.view(added.id)).toMatchObject({
      state: 'suspended',
      error: 'agent link down: no reply to ports.subscribe',
    });
    const tcpAdded = await engine.add({ proto: 'tcp', hostPort: await freePort(), guestPort: 80 });
    expect(tcpAdded.state).toBe('forwarding');
  });

  it('refuses an added forward on a host address another added forward holds', async () => {
    engine = make();
    const hostPort = await freePort();
    const first = await engine.add({ proto: 'tcp', hostPort, guestPort: 8123 });
    await expect(engine.add({ proto: 'tcp', hostPort, guestPort: 8125 })).rejects.toThrow(
      `host 127.0.0.1:${hostPort} is already used by forward ${first.id} (runtime); remove it first: tether forward rm tmp '${first.id}'`,
    );
    expect(engine.views().map((v) => v.id)).toEqual([first.id]);
  });

  it('caps detected forwards with a single warning', async () => {
    engine = make(3);
    const base = await freePort();
    const many = Array.from({ length: 50 }, (_, i) => ({ ...tcp('127.0.0.1', base + i) }));
    await engine.setListeners(many);
    expect(engine.views()).toHaveLength(3);
    expect(engine.capped).toBe(47);
    expect(lines.filter((l) => l.msg.includes('maxForwards'))).toHaveLength(1);
  });

  it('does not let ignored listeners take the slots of forwarded ones', async () => {
    engine = make(2);
    const port = await freePort();
    // The guest's sshd and non-loopback listeners are ignored; they count against a cap of their own.
    await engine.setListeners([tcp('127.0.0.1', 22), tcp('10.0.0.1', 80), tcp('10.0.0.2', 80), tcp('127.0.0.1', port)]);
    expect(engine.view(`tcp/127.0.0.1:${port}`)?.state).toBe('forwarding');
    expect(engine.views().filter((v) => v.state === 'ignored')).toHaveLength(2);
    expect(engine.capped).toBe(1); // the third ignored one
    expect(lines.filter((l) => l.msg.includes('maxForwards'))).toHaveLength(1);
  });

  it('bounds the listeners it remembers from deltas, with one warning', async () => {
    engine = make(2); // remembers 4 × 2
    const base = await freePort();
    for (let round = 0; round < 3; round++) {
      const added = Array.from({ length: 10 }, (_, i) => tcp('10.0.0.1', base + round * 10 + i));
      await engine.applyDelta({ added, removed: [] });
    }
    expect(engine.views().length + engine.capped).toBe(8);
    expect(lines.filter((l) => l.msg.includes('listeners; the rest are not tracked'))).toHaveLength(1);
  });

  it('warns once about connections it cannot forward while they keep failing, counting the rest', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    refusing.add('127.0.0.1');
    try {
      for (let i = 0; i < 3; i++) await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      refusing.clear();
    }
    const warned = lines.filter((l) => l.level === 40 && l.msg.startsWith('cannot forward a connection'));
    expect(warned.map((l) => l.msg)).toEqual([
      `cannot forward a connection to guest 127.0.0.1:${port}: cannot open a channel: (SSH) Channel open failure: Connection refused`,
    ]);
  });

  it("asks the guest agent to scan when a detected listener's port refuses, not when sshd prohibits it", async () => {
    let scans = 0;
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [],
      maxForwards: 4096,
      instanceDir: '/tmp',
      logger,
      requestScan: () => scans++,
    });
    const [port, closed] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', port), tcp('::1', closed)]);
    await expect(echo(port)).resolves.toBe('hi');
    prohibited.add(port); // refused by sshd's configuration: nothing to scan for
    try {
      await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      prohibited.clear();
    }
    expect(scans).toBe(0);
    refusing.add('::1');
    try {
      await expect(echo(closed)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(scans).toBe(1);
      await expect(echo(closed)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(scans).toBe(2);
    } finally {
      refusing.clear();
    }
  });

  it('forwards a capped listener once a forwarded one goes', async () => {
    engine = make(2);
    const [a, b, c] = [await freePort(), await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('127.0.0.1', b), tcp('127.0.0.1', c)]);
    expect(engine.capped).toBe(1);
    const capped = [a, b, c].find((p) => !engine.view(`tcp/127.0.0.1:${p}`))!;
    const gone = [a, b, c].find((p) => p !== capped)!;
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', gone)] });
    await expect.poll(() => engine.view(`tcp/127.0.0.1:${capped}`)?.state).toBe('forwarding');
    expect(engine.capped).toBe(0);
    expect(await echo(capped)).toBe('hi');
  });

  it('turns a removed detected forward into ignored while its listener exists', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    await engine.remove(`tcp/127.0.0.1:${port}`);
    expect(engine.view(`tcp/127.0.0.1:${port}`)).toMatchObject({ state: 'ignored', hostAddrs: [], cause: 'removed' });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await expect(engine.remove('tcp/127.0.0.1:1')).rejects.toThrow(/no forward with id tcp\/127.0.0.1:1/);
  });

  it('keeps a removed port ignored when its server comes back on another address, and keeps an earlier reason', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('::', port)]);
    await engine.remove(`tcp/[::]:${port}`);
    await engine.applyDelta({ added: [tcp('127.0.0.1', port)], removed: [tcp('::', port)] });
    expect(engine.view(`tcp/127.0.0.1:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    // The guest's sshd port: removing it again says nothing new and keeps why it is ignored.
    await engine.setListeners([tcp('127.0.0.1', 22)]);
    const before = engine.view('tcp/127.0.0.1:22')?.error;
    expect(before).toMatch(/sshd/);
    await engine.remove('tcp/127.0.0.1:22');
    expect(engine.view('tcp/127.0.0.1:22')).toMatchObject({ error: before, cause: 'rule' });
  });

  it('adds a forward to a guest address other than its loopback, as ssh -L HOSTPORT:HOST:PORT does', async () => {
    engine = make();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    const server = { ...tcp('127.0.0.53', guestPort), pid: 53, command: 'systemd-resolved' };
    await engine.setListeners([server]);
    // The default rule ignores a listener on 127.0.0.53; an added forward names it.
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)?.state).toBe('ignored');
    const added = await engine.add({ proto: 'tcp', hostPort, guestIP: '127.0.0.53', guestPort });
    expect(added).toMatchObject({
      id: `tcp/127.0.0.53:${guestPort}->${hostPort}`,
      guestAddr: `127.0.0.53:${guestPort}`,
      state: 'forwarding',
      process: { pid: 53, command: 'systemd-resolved' },
    });
    tried.length = 0;
    expect(await echo(hostPort)).toBe('hi');
    expect(tried).toEqual(['127.0.0.53']);
    // The ignored row no longer suggests the forward add that was made: it says where the listener is served.
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)).toMatchObject({
      state: 'ignored',
      error: `served on host 127.0.0.1:${hostPort}, [::1]:${hostPort} by forward ${added.id} (forwarding)`,
    });
    await engine.remove(added.id);
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)?.error).toMatch(
      new RegExp(`or run \`tether forward add [^ ]+ ${guestPort}:127\\.0\\.0\\.53:${guestPort}\`$`),
    );
  });

  it('says first that the operator removed a detected listener that an added forward serves elsewhere', async () => {
    engine = make();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', guestPort)]);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    await engine.remove(`tcp/127.0.0.1:${guestPort}`);
    expect(engine.view(`tcp/127.0.0.1:${guestPort}`)).toMatchObject({
      state: 'ignored',
      error: `removed by the operator (tether forward rm); served on host 127.0.0.1:${hostPort}, [::1]:${hostPort} by forward ${added.id} (forwarding)`,
    });
  });

  it('keeps a runtime forward to another host port beside the detected one, and restores a replaced one', async () => {
    engine = make();
    const [guest, other] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', guest)]);
    const extra = await engine.add({ proto: 'tcp', hostPort: other, guestPort: guest });
    expect(extra.id).toBe(`tcp/127.0.0.1:${guest}->${other}`);
    expect(engine.view(`tcp/127.0.0.1:${guest}`)?.state).toBe('forwarding');
    expect(await echo(other)).toBe('hi');
    await engine.remove(extra.id);
    await expect(echo(other)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await echo(guest)).toBe('hi');

    const same = await engine.add({ proto: 'tcp', hostPort: guest, guestPort: guest });
    expect(same).toMatchObject({ id: `tcp/127.0.0.1:${guest}`, source: 'runtime' });
    await engine.remove(same.id);
    expect(engine.view(`tcp/127.0.0.1:${guest}`)).toMatchObject({ source: 'detected', state: 'forwarding' });
    expect(await echo(guest)).toBe('hi');
  });

  it('shows on an added forward to another host port the process of the guest listener it reaches', async () => {
    engine = make();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    const server = { ...tcp('0.0.0.0', guestPort), pid: 77, command: 'nginx: master process' };
    await engine.setListeners([server]);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(added).toMatchObject({
      guestAddr: `127.0.0.1:${guestPort}`,
      process: { pid: 77, command: 'nginx: master process' },
    });
    // Its own detected row keeps the process too.
    expect(engine.view(`tcp/0.0.0.0:${guestPort}`)?.process).toEqual({ pid: 77, command: 'nginx: master process' });
    await engine.applyDelta({ added: [], removed: [server] });
    expect(engine.view(added.id)?.process).toBeNull();
    // A listener on another guest address (not one 127.0.0.1 reaches) is not its process.
    await engine.applyDelta({ added: [{ ...tcp('10.0.2.15', guestPort), pid: 78, command: 'other' }], removed: [] });
    expect(engine.view(added.id)?.process).toBeNull();
    await engine.applyDelta({
      added: [{ ...tcp('127.0.0.1', guestPort), pid: 79, command: 'dev server' }],
      removed: [],
    });
    expect(engine.view(added.id)?.process).toEqual({ pid: 79, command: 'dev server' });
  });

  it('forwards a port removed with forward rm again when a forward of it is added, without a second row', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port)]);
    await engine.remove(`tcp/0.0.0.0:${port}`);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(await echo(port)).toBe('hi');
    // The detected listener is served by the added forward: no ignored row is left beside it.
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[added.id, 'forwarding']]);
    // Removing the added forward leaves the port forwarded as detected, as before the rm.
    await engine.remove(added.id);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ source: 'detected', state: 'forwarding' });
    expect(await echo(port)).toBe('hi');
  });

  it('leaves a port removed with forward rm removed when a forward of it to another host port is added', async () => {
    engine = make();
    const [port, other] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('0.0.0.0', port)]);
    await engine.remove(`tcp/0.0.0.0:${port}`);
    const added = await engine.add({ proto: 'tcp', hostPort: other, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(await echo(other)).toBe('hi');
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('counts on, on a forward made anew by an add, the connections and bytes it had', async () => {
    const { port, id, held } = await detectedWithConnection();
    await waitUntil(() => engine.view(id)?.connections === 1);
    // An added 127.0.0.1 forward of the port takes that address: the detected forward is made anew on the rest.
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(engine.view(id)?.connections).toBe(1);
    held.destroy();
    await waitUntil(() => engine.view(id)?.connections === 0);
  });

  it('keeps the host listener of an address whose guest socket was replaced within one delta (SO_REUSEPORT)', async () => {
    const { port, id, held } = await detectedWithConnection();
    lines.length = 0;
    const next = { ...tcp('0.0.0.0', port), pid: 43, command: 'worker 2' };
    await engine.applyDelta({ added: [next], removed: [tcp('0.0.0.0', port)] });
    expect(engine.view(id)).toMatchObject({ state: 'forwarding', process: { pid: 43, command: 'worker 2' } });
    expect(lines.filter((l) => l.msg.includes(id) && /removed|bound|listening/.test(l.msg))).toEqual([]);
    // The host socket was never closed: a second host listener on the port is still refused.
    await expect(
      new Promise((resolve, reject) =>
        net
          .createServer()
          .once('error', reject)
          .listen(port, '127.0.0.1', () => resolve('bound')),
      ),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    held.destroy();
    expect(await echo(port)).toBe('hi');
  });

  it('logs a first state once every host address has answered: conflict, not forwarding then conflict', async () => {
    engine = make();
    const port = await freePort();
    const held = await holdPort(port, '::1');
    try {
      await engine.setListeners([tcp('::', port)]);
      expect(engine.view(`tcp/[::]:${port}`)?.state).toBe('conflict');
      const states = lines.filter((l) => l.forward === `tcp/[::]:${port}` && l.state !== undefined);
      expect(states.map((l) => l.state)).toEqual(['conflict']);
    } finally {
      held.close();
    }
  });

  it('serves one guest port per host port: an explicit forward to another takes it, the detected one waits', async () => {
    engine = make();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const extra = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 80 });
    expect(extra.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: `host 127.0.0.1:${port} is taken by forward ${extra.id} (guest 127.0.0.1:80)`,
      heldBy: { kind: 'forward', id: extra.id, address: `127.0.0.1:${port}` },
    });
    expect(await echo(port)).toBe('hi');
    expect(dialed.at(-1)).toBe(80);
    await engine.remove(extra.id);
    expect(engine.view(detected)).toMatchObject({ state: 'forwarding', error: null });
    expect(await echo(port)).toBe('hi');
    expect(dialed.at(-1)).toBe(port);
  });

  it('names a forward that takes both host addresses of a port once, with both addresses', async () => {
    engine = make();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const extra = await engine.add({ proto: 'tcp', hostPort: port, guestPort: 80 });
    expect(extra.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: `host 127.0.0.1:${port}, [::1]:${port} are taken by forward ${extra.id} (guest 127.0.0.1:80)`,
    });
  });

  it('names the host program too when the forward that has the host port first waits for it as well', async () => {
    engine = make();
    const port = await freePort();
    const held = await holdPort(port, '127.0.0.1');
    try {
      const detected = `tcp/0.0.0.0:${port}`;
      await engine.setListeners([tcp('0.0.0.0', port)]);
      const extra = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 80 });
      expect(extra.state).toBe('conflict');
      const view = engine.view(detected);
      expect(view?.state).toBe('conflict');
      expect(view?.error).toContain(
        `host 127.0.0.1:${port} is wanted by forward ${extra.id} (guest 127.0.0.1:80) first, which waits for it too: `,
      );
      expect(view?.error).toContain(extra.error ?? 'the added forward has no error');
    } finally {
      held.close();
    }
  });

  it('logs a conflict once at warn, while the other address family binds', async () => {
    engine = make();
    const port = await freePort();
    const holder = net.createServer().listen(port, '127.0.0.1');
    await once(holder, 'listening');
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      expect(engine.view(`tcp/127.0.0.1:${port}`)?.state).toBe('conflict');
      const warned = lines.filter((l) => l.level === 40 && l.msg.includes(`:${port}: conflict`));
      expect(warned).toHaveLength(1);
    } finally {
      holder.close();
    }
  });

  it('says a host port held by a connection from it (not a listener) is that, and binds once it is gone', async () => {
    // Host 127.0.0.1 only: the same port number on [::1] can be any other process's connection on a busy machine.
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ hostIP: '127.0.0.1' })],
      maxForwards: 4096,
      instanceDir: '/tmp',
      logger,
    });
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const { client, port } = await connectionFrom((server.address() as net.AddressInfo).port);
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      const id = `tcp/127.0.0.1:${port}`;
      // 127.0.0.1 is taken by the connection, which the first word on it already says (it is the one the log keeps).
      const held = `127.0.0.1:${port} is held by a connection from that port, not by a listener`;
      expect(engine.view(id)?.error).toContain(held);
      expect(engine.view(id)?.heldBy).toEqual({ kind: 'connection' });
      // The server closes first, so its side waits in TIME-WAIT and the client's port is free once it closes.
      const [serverSide] = await accepted;
      serverSide.destroy();
      await once(client, 'exit');
      // The retry backs off to 5 s between attempts.
      await vi.waitFor(
        () => expect(engine.view(id)).toMatchObject({ state: 'forwarding', error: null, heldBy: null }),
        {
          timeout: 15_000,
          interval: 100,
        },
      );
    } finally {
      client.kill();
      server.close();
    }
  });

  it("reaches a guest :: listener from host ::1 through the guest's 127.0.0.1 when its ::1 refuses (IPv6 off)", async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('::', port)]);
    refusing.add('::1');
    try {
      expect(await echo(port, '::1')).toBe('hi');
      expect(await echo(port, '127.0.0.1')).toBe('hi');
    } finally {
      refusing.clear();
    }
  });

  it("sends a forward added by port to the guest's ::1 when its 127.0.0.1 refuses (a server bound to localhost)", async () => {
    engine = make();
    const hostPort = await freePort();
    const view = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort, guestPort: 80 });
    expect(view.state).toBe('forwarding');
    refusing.add('127.0.0.1');
    try {
      expect(await echo(hostPort)).toBe('hi');
    } finally {
      refusing.clear();
    }
  });

  it('points a forward added by port at ::1 while its only listener is there, and shows that address', async () => {
    engine = make();
    const port = await freePort();
    const id = `tcp/127.0.0.1:${port}`;
    const changes: string[] = [];
    engine.on('change', (v: { id: string; guestAddr: string }) => {
      if (v.id === id) changes.push(v.guestAddr);
    });
    const view = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(view).toMatchObject({ id, guestAddr: `127.0.0.1:${port}` });
    await engine.applyDelta({ added: [tcp('::1', port)], removed: [] });
    expect(engine.view(id)).toMatchObject({ guestAddr: `[::1]:${port}`, process: { pid: 42 } });
    expect(changes).toContain(`[::1]:${port}`);
    expect(await triedWhile127Refuses(port)).toEqual(['::1']);
    // Listeners on both loopbacks: the address asked for.
    await engine.applyDelta({ added: [tcp('127.0.0.1', port)], removed: [] });
    expect(engine.view(id)?.guestAddr).toBe(`127.0.0.1:${port}`);
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', port)] });
    expect(engine.view(id)?.guestAddr).toBe(`[::1]:${port}`);
    await engine.applyDelta({ added: [], removed: [tcp('::1', port)] });
    expect(engine.view(id)).toMatchObject({ guestAddr: `127.0.0.1:${port}`, process: null });
  });

  it('points a forward added to another host port at ::1 when its guest port listens only there', async () => {
    engine = make();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    // The listener first (its own detected forward on host guestPort), then the forward to another host port.
    await engine.setListeners([tcp('::1', guestPort)]);
    const view = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(view.guestAddr).toBe(`[::1]:${guestPort}`);
    expect(await triedWhile127Refuses(hostPort)).toEqual(['::1']);
    // The server moves to 0.0.0.0 (reachable on 127.0.0.1): back to the address asked for.
    await engine.applyDelta({ added: [tcp('0.0.0.0', guestPort)], removed: [tcp('::1', guestPort)] });
    expect(engine.view(view.id)?.guestAddr).toBe(`127.0.0.1:${guestPort}`);
  });

  it("shows a forward whose channels the guest's sshd prohibits as error, naming the option, until one opens", async () => {
    engine = make();
    const port = await freePort();
    const id = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    prohibited.add(port);
    try {
      await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
      await expect.poll(() => engine.view(id)?.state).toBe('error');
      expect(engine.view(id)?.error).toMatch(
        /refuses the channel \(.*open failed\): in the guest.s \/etc\/ssh\/sshd_config .*set AllowTcpForwarding yes/,
      );
      expect(engine.view(id)?.cause).toBe('sshd-refuses');
    } finally {
      prohibited.clear();
    }
    expect(await echo(port)).toBe('hi');
    expect(engine.view(id)).toMatchObject({ state: 'forwarding', error: null, cause: null });
  });

  it('takes back a forward add that binds nothing, and says why', async () => {
    engine = make();
    const hostPort = await freePort();
    // 192.0.2.1 (TEST-NET-1) is no address of this host: only bound, never sent to.
    await expect(engine.add({ proto: 'tcp', hostIP: '192.0.2.1', hostPort, guestPort: 80 })).rejects.toThrow(
      new RegExp(
        `^forward tcp/127.0.0.1:80->${hostPort} not added: cannot listen on 192.0.2.1:${hostPort}: .*EADDRNOTAVAIL[^;]*$`,
      ),
    );
    expect(engine.views()).toEqual([]);
    // A forward that never was has no state lines: only the refusal (the control API logs it) says anything.
    expect(lines.filter((l) => l.forward === `tcp/127.0.0.1:80->${hostPort}`)).toEqual([]);
  });

  it('says which forwards it closes when it stops, and why', async () => {
    engine = make();
    const hostPort = await freePort();
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort: 80 });
    expect(added.state).toBe('forwarding');
    await engine.stop('host agent stopping: tether down');
    expect(lines.filter((l) => l.forward === added.id).map((l) => l.msg)).toEqual([
      `forward tcp guest 127.0.0.1:80 → host ${added.hostAddrs.join(', ')}: forwarding`,
      `forward ${added.id} closed (guest 127.0.0.1:80 → host ${added.hostAddrs.join(', ')}): host agent stopping: tether down`,
    ]);
  });

  it('keeps a static rule for an address the host does not have yet in error, retrying', async () => {
    const hostPort = await freePort();
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort: 80, hostIP: '192.0.2.1', hostPort, static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
      retryInitialMs: 10,
      retryMaxMs: 20,
    });
    await engine.start();
    const id = `tcp/127.0.0.1:80->${hostPort}`;
    expect(engine.view(id)).toMatchObject({
      state: 'error',
      error: expect.stringMatching(/EADDRNOTAVAIL.*; retrying$/),
    });
  });

  it('lists a static rule to another host port and its guest listener as one forward, carrying the process', async () => {
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort, hostPort, static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
    });
    await engine.start();
    await engine.setListeners([{ ...tcp('127.0.0.1', guestPort), pid: 7, command: 'node server.js' }]);
    expect(engine.views().map((v) => [v.id, v.source, v.state, v.process?.command])).toEqual([
      [`tcp/127.0.0.1:${guestPort}->${hostPort}`, 'static', 'forwarding', 'node server.js'],
    ]);
    // The server stops: the static forward stays, without its process.
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', guestPort)] });
    expect(engine.view(`tcp/127.0.0.1:${guestPort}->${hostPort}`)?.process).toBeNull();
    await engine.applyDelta({
      added: [{ ...tcp('127.0.0.1', guestPort), pid: 8, command: 'node server.js' }],
      removed: [],
    });
    expect(engine.view(`tcp/127.0.0.1:${guestPort}->${hostPort}`)?.process).toEqual({
      pid: 8,
      command: 'node server.js',
    });
    // Removing the static forward stops its host port: detected through the same rule, the listener would take it
    // back, so it is left ignored as a removed detected forward is, until a forward of its port is added.
    await engine.remove(`tcp/127.0.0.1:${guestPort}->${hostPort}`);
    expect(engine.views().map((v) => [v.id, v.source, v.state, v.hostAddrs, v.error])).toEqual([
      [`tcp/127.0.0.1:${guestPort}`, 'detected', 'ignored', [], 'removed by the operator'],
    ]);
    await expect(echo(hostPort)).rejects.toThrow(/ECONNREFUSED/);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[added.id, 'forwarding']]);
  });

  it('lists a static rule with a host address and its guest listener as one forward', async () => {
    const port = await freePort();
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort: port, hostIP: '127.0.0.1', static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
    });
    await engine.start();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    expect(engine.views().map((v) => [v.id, v.source, v.state])).toEqual([
      [`tcp/127.0.0.1:${port}`, 'static', 'forwarding'],
    ]);
  });

  it('binds every address of both families for hostIP ::', async () => {
    engine = make();
    const hostPort = await freePort();
    const f = await engine.add({ proto: 'tcp', hostIP: '::', hostPort, guestPort: 80 });
    expect(f).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${hostPort}`, `[::]:${hostPort}`] });
    expect(await echo(hostPort, '127.0.0.1')).toBe('hi');
    expect(await echo(hostPort, '::1')).toBe('hi');
  });

  it('forwards one guest port on two host addresses as two forwards', async () => {
    engine = make();
    const hostPort = await freePort();
    const a = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort, guestPort: 80 });
    const b = await engine.add({ proto: 'tcp', hostIP: '127.0.0.2', hostPort, guestPort: 80 });
    // The second one's id names its host address: the plain one is the first's.
    expect([a.id, b.id]).toEqual([`tcp/127.0.0.1:80->${hostPort}`, `tcp/127.0.0.1:80->127.0.0.2:${hostPort}`]);
    expect(engine.views().map((v) => v.state)).toEqual(['forwarding', 'forwarding']);
    expect(await echo(hostPort, '127.0.0.2')).toBe('hi');
    await engine.remove(a.id);
    await expect(echo(hostPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await echo(hostPort, '127.0.0.2')).toBe('hi');
  });

  it('gives an added wildcard host address to the explicit forward; the detected one keeps what does not overlap', async () => {
    engine = make();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const wide = await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: port });
    expect(wide).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${port}`] });
    // The listener is served on 127.0.0.1 by the explicit forward; its own forward keeps [::1].
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'forwarding', hostAddrs: [`[::1]:${port}`] });
    expect(await echo(port)).toBe('hi');
    await engine.remove(wide.id);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({
      state: 'forwarding',
      hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    });
  });

  it('makes a detected forward of another guest port wait for an added wildcard, naming it, and take the port back at once', async () => {
    engine = new ForwardEngine({
      ...{ ssh: fakeSsh, portForwards: [], maxForwards: 10, instanceDir: '/tmp', logger },
      retryInitialMs: 60_000,
      retryMaxMs: 60_000,
    });
    const [port, other] = [await freePort(), await freePort()];
    const detected = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const wide = await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: other });
    expect(wide.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: expect.stringContaining(
        `host address 127.0.0.1:${port} is in use by tether's forward ${wide.id} (on 0.0.0.0:${port})`,
      ),
      heldBy: { kind: 'forward', id: wide.id, address: `0.0.0.0:${port}` },
    });
    // Removed: the detected forward binds at once, not at its next retry a minute later.
    await engine.remove(wide.id);
    await expect.poll(() => engine.view(detected)?.state).toBe('forwarding');
  });

  it('keeps a listener forwarded on a wildcard by a rule in conflict under a narrower added forward, naming it', async () => {
    const port = await freePort();
    engine = new ForwardEngine({
      ...{ ssh: fakeSsh, maxForwards: 10, instanceDir: '/tmp', logger },
      portForwards: [PortForward.parse({ guestPort: port, hostIP: '0.0.0.0' })],
    });
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const detected = `tcp/127.0.0.1:${port}`;
    expect(engine.view(detected)).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${port}`] });
    const narrow = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(narrow).toMatchObject({ state: 'forwarding', hostAddrs: [`127.0.0.1:${port}`] });
    // 127.0.0.1 does not take what 0.0.0.0 took (other interfaces): the rule's forward says why it waits.
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: expect.stringContaining(`in use by tether's forward ${narrow.id}`),
      heldBy: { kind: 'forward', id: narrow.id, address: `127.0.0.1:${port}` },
    });
  });

  it('keeps a displaced detected forward at maxForwards: its slot does not go to a capped listener', async () => {
    engine = make(2);
    const [a, b, c, other] = [await freePort(), await freePort(), await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('127.0.0.1', b), tcp('127.0.0.1', c)]);
    const before = engine.views().map((v) => v.id);
    expect(before).toHaveLength(2);
    const capped = [a, b, c].map((p) => `tcp/127.0.0.1:${p}`).find((id) => !before.includes(id));
    const first = before.find((id) => id === `tcp/127.0.0.1:${a}`) ?? before[0];
    const firstPort = Number(first.split(':').pop());
    await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: firstPort, guestPort: other });
    const ids = engine.views().map((v) => v.id);
    expect(ids).toContain(first);
    expect(ids).not.toContain(capped);
    expect(engine.view(first)).toMatchObject({
      state: 'conflict',
      hostAddrs: [`127.0.0.1:${firstPort}`, `[::1]:${firstPort}`],
    });
  });

  it('refuses an added forward whose host address overlaps another added one, naming both addresses', async () => {
    engine = make();
    const port = await freePort();
    const wide = await engine.add({ proto: 'tcp', hostIP: '::', hostPort: port, guestPort: 8010 });
    expect(wide.state).toBe('forwarding');
    await expect(engine.add({ proto: 'tcp', hostPort: port, guestPort: 8011 })).rejects.toThrow(
      `host 0.0.0.0:${port} (overlapping 127.0.0.1:${port}) is already used by forward ${wide.id} (runtime)`,
    );
    await engine.remove(wide.id);
    const narrow = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 8011 });
    await expect(engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: 8010 })).rejects.toThrow(
      `host 127.0.0.1:${port} (overlapping 0.0.0.0:${port}) is already used by forward ${narrow.id} (runtime)`,
    );
    expect(engine.views().map((v) => v.id)).toEqual([narrow.id]);
  });
});

describe('ForwardEngine unix socket forwards', () => {
  let engine: ForwardEngine | undefined;
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tether-engine-'));
  });
  afterEach(async () => {
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const make = (rules: object[], ssh: SshSession = fakeSsh) =>
    new ForwardEngine({
      ssh,
      portForwards: rules.map((r) => PortForward.parse(r)),
      maxForwards: 10,
      instanceDir: dir,
      logger,
    });

  it('gives one host socket to one guest socket: a second rule with the same path is an error, an add refused', async () => {
    engine = make([{ guestSocket: '/var/run/docker.sock' }, { guestSocket: '/run/user/1000/docker.sock' }]);
    await engine.start();
    const host = join(dir, 'docker.sock');
    expect(engine.view('unix//var/run/docker.sock')).toMatchObject({ state: 'forwarding', hostAddrs: [host] });
    expect(engine.view('unix//run/user/1000/docker.sock')).toMatchObject({
      state: 'error',
      error: expect.stringContaining(`host socket ${host} already serves forward unix//var/run/docker.sock`),
    });
    await expect(engine.add({ proto: 'unix', guestSocket: '/run/podman.sock', hostSocket: host })).rejects.toThrow(
      `host socket ${host} is already used by forward unix//var/run/docker.sock (static)`,
    );
  });

  it('refuses an added socket whose host path cannot be made, naming the host side first, and leaves nothing', async () => {
    const socket = { state: 'absent' };
    const guest = socketGuest(socket);
    engine = make([], guest.ssh);
    await engine.start();
    const deep = join(dir, 'x'.repeat(120), 'docker.sock');
    const tooLong = engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: deep });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(tooLong).rejects.toThrow(
      /^forward unix\/\/run\/a\.sock not added: cannot listen on \S+: the path is too long for a unix socket \(\d+ bytes; pick a shorter one\); guest socket \/run\/a\.sock does not exist/,
    );
    expect(existsSync(join(dir, 'x'.repeat(120)))).toBe(false);

    // A file where the socket's directory should be.
    writeFileSync(join(dir, 'file'), '');
    socket.state = 'listening';
    const blocked = engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(dir, 'file', 'b.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(blocked).rejects.toThrow(
      /not added: cannot listen on \S+\/file\/b\.sock: EEXIST: file already exists, mkdir /,
    );

    // procfs takes no new files, not even root's: EACCES, which for a socket path is no question of port privileges.
    const proc = engine.add({ proto: 'unix', guestSocket: '/run/c.sock', hostSocket: '/proc/tether-test.sock' });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await expect(proc).rejects.toThrow(
      'forward unix//run/c.sock not added: cannot create the socket /proc/tether-test.sock: permission denied (EACCES); ' +
        'pick a host path in a directory you can write',
    );
    expect(engine.views()).toEqual([]);
  });

  it('forwards one guest socket to two host paths, and skips a rule that repeats an earlier one', async () => {
    const [first, second, third] = [join(dir, 'first.sock'), join(dir, 'second.sock'), join(dir, 'third.sock')];
    engine = make([
      { guestSocket: '/run/a.sock', hostSocket: first },
      { guestSocket: '/run/a.sock', hostSocket: second },
      { guestSocket: '/run/a.sock', hostSocket: first },
    ]);
    await engine.start();
    expect(engine.views().map((v) => [v.id, v.hostAddrs, v.state])).toEqual([
      ['unix//run/a.sock', [first], 'forwarding'],
      [`unix//run/a.sock->${second}`, [second], 'forwarding'],
    ]);
    expect(existsSync(first) && existsSync(second)).toBe(true);
    expect(
      lines.some((l) => l.msg === 'portForwards[2] repeats forward unix//run/a.sock of an earlier rule; skipped'),
    ).toBe(true);

    const added = await engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: third });
    expect(added).toMatchObject({ id: `unix//run/a.sock->${third}`, state: 'forwarding' });
    await expect(engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: third })).rejects.toThrow(
      /already/,
    );
  });

  it('makes the directories of an added socket, and removes them with it when nothing else is in them', async () => {
    engine = make([]);
    await engine.start();
    const [kept, gone] = [join(dir, 'kept'), join(dir, 'gone')];
    const a = await engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: join(kept, 'in', 'a.sock') });
    const b = await engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(gone, 'in', 'b.sock') });
    expect([a.state, b.state]).toEqual(['forwarding', 'forwarding']);
    writeFileSync(join(kept, 'note'), 'the user put this here meanwhile');
    await engine.remove(a.id);
    await engine.remove(b.id);
    expect([existsSync(join(kept, 'in')), existsSync(join(kept, 'note')), existsSync(gone)]).toEqual([
      false,
      true,
      false,
    ]);
  });

  it('leaves a socket another program serves alone (conflict), and replaces a stale one', async () => {
    const live = join(dir, 'live.sock');
    const other = net.createServer((s) => s.on('error', () => {}).end('theirs')).listen(live);
    await once(other, 'listening');
    // A socket file whose server was killed, so nothing removed it.
    const stale = join(dir, 'stale.sock');
    const killed = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(killed.signal).toBe('SIGKILL');
    expect(lstatSync(stale).isSocket()).toBe(true);
    try {
      engine = make([
        { guestSocket: '/run/a.sock', hostSocket: live },
        { guestSocket: '/run/b.sock', hostSocket: stale },
      ]);
      await engine.start();
      expect(engine.view('unix//run/a.sock')).toMatchObject({
        state: 'conflict',
        error: expect.stringContaining(`host address ${live} is in use by another process`),
      });
      expect(engine.view('unix//run/b.sock')?.state).toBe('forwarding');
      await engine.stop();
      engine = undefined;
      // The other program's socket is still there and still its own.
      expect(existsSync(live)).toBe(true);
      expect(existsSync(stale)).toBe(false);
    } finally {
      other.close();
    }
  });

  /**
   * A guest whose sshd answers streamlocal opens as `socket` says: each open waits for the test to settle it
   * (`answer`), and the look from an exec channel reports the socket's state.
   */
  function socketGuest(socket: { state: string }) {
    const opens: { resolve: (ch: { destroy(): void }) => void; reject: (err: Error) => void }[] = [];
    let destroyed = 0;
    const ssh = {
      openStreamLocal: () => new Promise((resolve, reject) => opens.push({ resolve, reject })),
      execText: async () => ({ code: 0, stdout: `user=tb\nstate=${socket.state}\n`, stderr: '' }),
    } as unknown as SshSession;
    /** Settles the pending opens as the guest socket is now. */
    const answer = () => {
      for (const o of opens.splice(0)) {
        if (socket.state === 'listening') o.resolve({ destroy: () => destroyed++ });
        else {
          const cause = Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason: 2 });
          o.reject(new ChannelOpenError(`cannot open guest socket: ${cause.message}`, cause));
        }
      }
    };
    return { ssh, opens, answer, destroyed: () => destroyed };
  }

  it('looks at the guest socket when a forward is set up: missing is an error with why before any client', async () => {
    const socket = { state: 'absent' };
    const guest = socketGuest(socket);
    engine = make([{ guestSocket: '/run/a.sock' }], guest.ssh);
    const started = engine.start();
    await waitUntil(() => guest.opens.length === 1);
    expect(engine.view('unix//run/a.sock')).toBeUndefined(); // not listed as forwarding while it is looked at
    guest.answer();
    await started;
    expect(engine.view('unix//run/a.sock')).toMatchObject({
      state: 'error',
      error: expect.stringContaining('guest socket /run/a.sock does not exist'),
      cause: 'service-down',
    });

    // An added forward to a socket that is not there yet is kept, in error; one that answers is forwarding.
    const adding = engine.add({ proto: 'unix', guestSocket: '/run/b.sock', hostSocket: join(dir, 'b.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    expect(await adding).toMatchObject({
      state: 'error',
      error: expect.stringContaining('/run/b.sock does not exist'),
    });
    socket.state = 'listening';
    const listening = engine.add({ proto: 'unix', guestSocket: '/run/c.sock', hostSocket: join(dir, 'c.sock') });
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    expect(await listening).toMatchObject({ state: 'forwarding', error: null });
    expect(guest.destroyed()).toBe(1); // the probe's channel is closed at once
  });

  it('probes one at a time when SSH comes back, and stays suspended until the probe tells', async () => {
    const socket = { state: 'listening' };
    const guest = socketGuest(socket);
    engine = make([{ guestSocket: '/run/a.sock' }], guest.ssh);
    const started = engine.start();
    await waitUntil(() => guest.opens.length === 1);
    guest.answer();
    await started;
    expect(engine.view('unix//run/a.sock')?.state).toBe('forwarding');

    socket.state = 'absent'; // the service stopped while SSH was down
    for (let i = 0; i < 3; i++) {
      engine.setSshDown('connection reset');
      engine.setSshDown(null);
    }
    await waitUntil(() => guest.opens.length > 0);
    expect(guest.opens).toHaveLength(1);
    expect(engine.view('unix//run/a.sock')?.state).toBe('suspended');
    guest.answer();
    await waitUntil(() => engine?.view('unix//run/a.sock')?.state === 'error');
    expect(engine.view('unix//run/a.sock')?.error).toContain('guest socket /run/a.sock does not exist');
    expect(guest.opens).toHaveLength(0);
  });
});

/**
 * An outgoing connection to `serverPort` from a port below the kernel's ephemeral range, made by a process that does
 * not set SO_REUSEADDR (Node sets it on every socket it binds, which would let a listener in). A port the kernel
 * picked at connect would do, but on a busy machine other processes' connections reuse it, holding it past the test's
 * own. The process ends once the server closes the connection.
 */
async function connectionFrom(serverPort: number): Promise<{ client: ChildProcess; port: number }> {
  const script = [
    'import socket, sys',
    's = socket.socket()',
    "s.bind(('127.0.0.1', int(sys.argv[1])))",
    "s.connect(('127.0.0.1', int(sys.argv[2])))",
    "print('connected', flush=True)",
    'while s.recv(1024): pass',
  ].join('\n');
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const client = spawn('python3', ['-c', script, String(port), String(serverPort)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const [first] = await Promise.race([once(client.stdout, 'data'), once(client, 'exit')]);
    if (String(first).startsWith('connected')) return { client, port };
    if (attempt === 5) throw new Error(`python3 could not connect from a fixed port (last tried ${port})`);
  }
}
