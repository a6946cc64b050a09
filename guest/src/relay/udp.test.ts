import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/helpers/wait.js';
import { AgentServer } from '../agent/server.js';
import { PortPoller } from '../ports/index.js';
import { connectClient, type TestClient } from '../testing/client.js';
import { resolveUdpTarget } from './udp.js';

// Datagrams go through the real agent server and protocol to echo servers bound to loopback in this process.

let dir: string;
const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tether-udp-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

async function echoServer(type: 'udp4' | 'udp6', address: string): Promise<number> {
  // A buffer for a burst: the kernel's default holds about 200 small datagrams.
  const s: Socket = createSocket({ type, ipv6Only: type === 'udp6', recvBufferSize: 1 << 20 });
  s.on('message', (msg, from) => s.send(Buffer.concat([Buffer.from('echo:'), msg]), from.port, from.address));
  s.bind(0, address);
  await once(s, 'listening');
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return (s.address() as AddressInfo).port;
}

/** A UDP port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function agentClient(idleMs = 60_000, maxFlows = 1024): Promise<TestClient> {
  const server = new AgentServer({
    socketPath: join(dir, 'agent.sock'),
    poller: new PortPoller({ excludeSelf: false, minIntervalMs: 20, maxIntervalMs: 100 }),
    udp: { idleMs, maxFlows },
  });
  await server.start();
  cleanups.push(() => server.close());
  const c = await connectClient(server.socketPath, ['udp.reply', 'udp.close']);
  cleanups.push(() => c.peer.close('test done'));
  return c;
}

const text = (d: Uint8Array) => Buffer.from(d).toString();

describe('UDP relay', () => {
  it('relays datagrams to IPv4 and IPv6 listeners and returns replies on the same flow', async () => {
    const c = await agentClient();
    const p4 = await echoServer('udp4', '127.0.0.1');
    const p6 = await echoServer('udp6', '::1');
    await c.peer.request('ports.snapshot', {}); // the agent has scanned since the listeners opened
    c.peer.notify('udp.dgram', { flow: 7, ip: '127.0.0.1', port: p4, data: Buffer.from('four') });
    c.peer.notify('udp.dgram', { flow: 9, ip: '::1', port: p6, data: Buffer.from('six') });
    c.peer.notify('udp.dgram', { flow: 7, ip: '127.0.0.1', port: p4, data: Buffer.from('again') });
    const replies = await waitFor(() => (c.events['udp.reply']?.length === 3 ? c.events['udp.reply'] : null), {
      what: 'three replies',
    });
    const byFlow = (flow: number) => replies.filter((r) => r.flow === flow).map((r) => text(r.data));
    expect(byFlow(7)).toEqual(['echo:four', 'echo:again']);
    expect(byFlow(9)).toEqual(['echo:six']);
  });

  it('holds a burst that opens a flow until its socket is connected, not only the first few datagrams', async () => {
    const c = await agentClient();
    const port = await echoServer('udp4', '127.0.0.1');
    await c.peer.request('ports.snapshot', {});
    // All in one write: they reach the relay before the flow's socket has bound and connected.
    for (let i = 0; i < 300; i++)
      c.peer.notify('udp.dgram', { flow: 5, ip: '127.0.0.1', port, data: Buffer.from(`${i}`.padStart(100, '.')) });
    await waitFor(() => c.events['udp.reply']?.length === 300, { what: '300 replies' }).catch((err: Error) => {
      throw new Error(`${err.message} (${c.events['udp.reply']?.length ?? 0} came)`);
    });
    expect(new Set((c.events['udp.reply'] ?? []).map((r) => text(r.data))).size).toBe(300);
  });

  // By the wildcard itself, and by another loopback address the host names (forward add 5300:127.0.0.5:53/udp).
  it('reaches a wildcard listener through loopback, named by the wildcard or another of its addresses', async () => {
    const c = await agentClient();
    const port = await echoServer('udp4', '0.0.0.0');
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 1, ip: '0.0.0.0', port, data: Buffer.from('any') });
    c.peer.notify('udp.dgram', { flow: 2, ip: '127.0.0.5', port, data: Buffer.from('five') });
    const replies = await waitFor(() => (c.events['udp.reply']?.length === 2 ? c.events['udp.reply'] : null), {
      what: 'both replies',
    });
    expect(replies.map((r) => [r.flow, text(r.data)]).sort()).toEqual([
      [1, 'echo:any'],
      [2, 'echo:five'],
    ]);
  });

  it('ends a flow that a datagram names another target for, so the host starts a new one', async () => {
    const c = await agentClient();
    const [a, b] = [await echoServer('udp4', '127.0.0.1'), await echoServer('udp4', '127.0.0.1')];
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 8, ip: '127.0.0.1', port: a, data: Buffer.from('a') });
    await waitFor(() => c.events['udp.reply']?.length === 1, { what: 'the reply from the first target' });
    c.peer.notify('udp.dgram', { flow: 8, ip: '127.0.0.1', port: b, data: Buffer.from('b') });
    const closed = await waitFor(() => c.events['udp.close']?.[0], { what: 'the flow to end' });
    expect(closed.flow).toBe(8);
    c.peer.notify('udp.dgram', { flow: 9, ip: '127.0.0.1', port: b, data: Buffer.from('b') });
    await waitFor(() => c.events['udp.reply']?.length === 2, { what: 'the reply on the new flow' });
    expect(text(c.events['udp.reply']![1].data)).toBe('echo:b');
  });

  it('refuses a target that is not a guest UDP listener and tells the host', async () => {
    const c = await agentClient();
    const port = await echoServer('udp4', '127.0.0.1');
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 3, ip: '127.0.0.2', port, data: Buffer.from('x') });
    c.peer.notify('udp.dgram', { flow: 4, ip: '127.0.0.1', port: await closedPort(), data: Buffer.from('x') });
    await waitFor(() => c.events['udp.close']?.length === 2, { what: 'two udp.close' });
    expect(c.events['udp.close']?.map((e) => e.flow).sort()).toEqual([3, 4]);
    // Each says why, for the host to report.
    expect(c.events['udp.close']?.find((e) => e.flow === 3)?.refused).toBe(
      `no guest UDP listener at 127.0.0.2:${port}`,
    );
    expect(c.events['udp.reply']).toEqual([]);
  });

  it('reaches a listener on the other loopback when the one named has none', async () => {
    const c = await agentClient();
    const port = await echoServer('udp4', '127.0.0.1');
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 5, ip: '::1', port, data: Buffer.from('x') });
    const reply = await waitFor(() => c.events['udp.reply']?.[0], { what: 'reply' });
    expect(reply.flow).toBe(5);
    expect(c.events['udp.close'] ?? []).toEqual([]);
  });

  it('moves a flow refused on 127.0.0.1 to ::1 when the listener there is an IPv6-only ::, and resends', async () => {
    const c = await agentClient();
    const port = await echoServer('udp6', '::'); // ipv6Only, as nginx and Go's "udp6" bind
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 6, ip: '127.0.0.1', port, data: Buffer.from('first') });
    const reply = await waitFor(() => c.events['udp.reply']?.[0], { what: 'the reply through ::1' });
    expect([reply.flow, text(reply.data)]).toEqual([6, 'echo:first']);
    c.peer.notify('udp.dgram', { flow: 6, ip: '127.0.0.1', port, data: Buffer.from('second') });
    await waitFor(() => c.events['udp.reply']?.length === 2, { what: 'a second reply on the moved flow' });
    expect(text(c.events['udp.reply']![1].data)).toBe('echo:second');
  });

  it('refuses flows beyond the per-client cap', async () => {
    const c = await agentClient(60_000, 2);
    const port = await echoServer('udp4', '127.0.0.1');
    await c.peer.request('ports.snapshot', {});
    for (const flow of [1, 2, 3]) c.peer.notify('udp.dgram', { flow, ip: '127.0.0.1', port, data: Buffer.from('x') });
    await waitFor(() => c.events['udp.reply']?.length === 2 && c.events['udp.close']?.length === 1, {
      what: 'two replies and one refusal',
    });
    expect(c.events['udp.close']?.[0]).toEqual({ flow: 3, refused: 'too many flows (2) for this client' });
    expect(c.events['udp.reply']?.map((r) => r.flow).sort()).toEqual([1, 2]);
  });

  it('expires an idle flow and announces it', async () => {
    const c = await agentClient(150);
    const port = await echoServer('udp4', '127.0.0.1');
    await c.peer.request('ports.snapshot', {});
    c.peer.notify('udp.dgram', { flow: 5, ip: '127.0.0.1', port, data: Buffer.from('x') });
    await waitFor(() => c.events['udp.reply']?.length === 1, { what: 'reply' });
    const closed = await waitFor(() => c.events['udp.close']?.[0], { what: 'idle close' });
    expect(closed).toEqual({ flow: 5 }); // not refused: it served
  });
});

describe('resolveUdpTarget', () => {
  const l = (ip: string, port: number, proto = 'udp') => ({ proto, ip, port });
  it('maps wildcards to loopback and refuses anything else', () => {
    expect(resolveUdpTarget('0.0.0.0', 53, [l('0.0.0.0', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('::', 53, [l('::', 53)])).toBe('::1');
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('10.0.2.15', 53, [l('10.0.2.15', 53)])).toBe('10.0.2.15');
    expect(resolveUdpTarget('10.0.2.16', 53, [l('0.0.0.0', 53)])).toBeNull();
    expect(resolveUdpTarget('127.0.0.1', 53, [l('127.0.0.1', 53, 'tcp')])).toBeNull();
    expect(resolveUdpTarget('127.0.0.1', 54, [l('127.0.0.1', 53)])).toBeNull();
  });

  it("lets a wildcard listener take the guest's other addresses, as the kernel does, and no one else's", () => {
    // Sent to it on loopback: it answers from the address the kernel picks, 127.0.0.1 for all of 127.0.0.0/8.
    expect(resolveUdpTarget('127.0.0.5', 53, [l('0.0.0.0', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('127.0.0.5', 53, [l('::', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('127.0.0.5', 53, [l('127.0.0.5', 53)])).toBe('127.0.0.5');
    expect(resolveUdpTarget('127.0.0.5', 53, [l('::1', 53)])).toBeNull();
    expect(resolveUdpTarget('127.0.0.5', 53, [l('127.0.0.1', 53)])).toBeNull();
    const lan = (ip: string) => ip === '10.0.2.15';
    expect(resolveUdpTarget('10.0.2.15', 53, [l('0.0.0.0', 53)], lan)).toBe('127.0.0.1');
    expect(resolveUdpTarget('10.0.2.16', 53, [l('0.0.0.0', 53)], lan)).toBeNull();
    expect(resolveUdpTarget('fd00::15', 53, [l('0.0.0.0', 53)], () => true)).toBeNull();
    expect(resolveUdpTarget('fd00::15', 53, [l('::', 53)], (ip) => ip === 'fd00::15')).toBe('::1');
  });

  it('reaches an IPv6 socket bound to a v4-mapped address by its IPv4 address, as the host names it', () => {
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::ffff:127.0.0.1', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('0.0.0.0', 53, [l('::ffff:0.0.0.0', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::ffff:0.0.0.0', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('::1', 53, [l('::ffff:127.0.0.1', 53)])).toBe('127.0.0.1');
  });

  it('falls back to the other loopback when the one named has no listener', () => {
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::1', 53)])).toBe('::1');
    expect(resolveUdpTarget('::1', 53, [l('127.0.0.1', 53)])).toBe('127.0.0.1');
    expect(resolveUdpTarget('::1', 53, [l('0.0.0.0', 53)])).toBe('127.0.0.1');
    // The one named wins when both have a listener.
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::1', 53), l('127.0.0.1', 53)])).toBe('127.0.0.1');
    // Only between loopbacks, and only to a listener.
    expect(resolveUdpTarget('10.0.2.15', 53, [l('::1', 53)])).toBeNull();
    expect(resolveUdpTarget('127.0.0.1', 53, [l('::1', 54)])).toBeNull();
  });
});
