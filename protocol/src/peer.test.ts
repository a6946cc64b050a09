import { Duplex, PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LinkClosedError, ProtocolVersionError, RemoteError, RequestTimeoutError } from './errors.js';
import { encodeFrame, FrameDecoder } from './frame.js';
import type { EventData, EventName, Info, Listener } from './messages.js';
import { Peer } from './peer.js';

/** Two connected in-memory Duplex streams (a socket pair without the kernel). */
function pipePair(): [Duplex, Duplex] {
  const aToB = new PassThrough();
  const bToA = new PassThrough();
  const a = Duplex.from({ readable: bToA, writable: aToB });
  const b = Duplex.from({ readable: aToB, writable: bToA });
  return [a, b];
}

function peers(): [Peer, Peer] {
  const [a, b] = pipePair();
  return [new Peer(a, { agent: 'host/test', caps: ['x'] }), new Peer(b, { agent: 'guest/test' })];
}

function closed(p: Peer): Promise<string> {
  return new Promise((resolve) => p.once('close', (reason: string) => resolve(reason)));
}

/** A raw stream to a Peer: lets a test send arbitrary bytes as the remote side. */
function rawRemote(): { peer: Peer; send: (b: Buffer) => void } {
  const [a, b] = pipePair();
  const peer = new Peer(a, { agent: 'host/test' });
  b.resume();
  b.on('error', () => {}); // destroying one side of the in-memory pair aborts the other
  return { peer, send: (buf) => b.write(buf) };
}
const hello = encodeFrame({ t: 'hello', v: 1, agent: 'evil/1', caps: [] });

const listener: Listener = {
  proto: 'tcp',
  family: 6,
  ip: '::1',
  port: 8080,
  pid: 42,
  command: 'python3 -m http.server',
};
const info: Info = {
  version: '0.1.0',
  kernel: '6.1.0',
  arch: 'x64',
  hostname: 'vm',
  uptimeSec: 10,
  startedAt: Date.now(),
  pid: 1,
  uid: 0,
  caps: ['ports', 'udp', 'fs'],
  scanIntervalMs: 100,
  lastScanMs: 0.2,
  listeners: 1,
};

describe('Peer', () => {
  it('exchanges hello with versions and capabilities', async () => {
    const [host, guest] = peers();
    const [h, g] = await Promise.all([guest.ready, host.ready]);
    expect(h).toMatchObject({ agent: 'host/test', caps: ['x'], v: 1 });
    expect(g.agent).toBe('guest/test');
  });

  it('round-trips every request method', async () => {
    const [host, guest] = peers();
    guest.handle('info', () => info);
    guest.handle('ports.subscribe', () => ({ seq: 1, listeners: [listener] }));
    guest.handle('ports.snapshot', () => ({ seq: 2, listeners: [] }));
    expect(await host.request('info', {})).toEqual(info);
    expect(await host.request('ports.subscribe', {})).toEqual({ seq: 1, listeners: [listener] });
    expect(await host.request('ports.snapshot', {})).toEqual({ seq: 2, listeners: [] });
    expect(await host.ping()).toBeGreaterThanOrEqual(0);
  });

  it('round-trips every event type', async () => {
    const [host, guest] = peers();
    const samples: { [E in EventName]: EventData<E> } = {
      'agent.bye': { reason: 'the guest is shutting down (SIGTERM)', systemStopping: true },
      'ports.delta': { seq: 3, added: [listener], removed: [{ ...listener, proto: 'udp', pid: null, command: null }] },
      'udp.dgram': { flow: 9, ip: '127.0.0.1', port: 53, data: Buffer.from('query') },
      'udp.reply': { flow: 9, data: Buffer.from('answer') },
      'udp.close': { flow: 9 },
      'fs.events': { root: '/home/u', events: [{ path: 'a/b.txt', kind: 'change' }] },
      'sockets.changed': { path: '/var/run/docker.sock' },
    };
    const got = new Map<string, unknown>();
    for (const name of Object.keys(samples) as EventName[]) guest.onEvent(name, (d) => got.set(name, d));
    for (const [name, data] of Object.entries(samples)) host.notify(name as EventName, data as never);
    await host.ping(); // events before the ping are delivered before its answer
    for (const [name, data] of Object.entries(samples)) {
      expect(JSON.stringify(got.get(name))).toBe(JSON.stringify(data));
    }
  });

  it('reports remote handler failures and unknown methods as RemoteError', async () => {
    const [host, guest] = peers();
    guest.handle('info', () => {
      throw new Error('scanner not started');
    });
    await expect(host.request('info', {})).rejects.toThrow(/scanner not started/);
    await expect(host.request('ports.snapshot', {})).rejects.toBeInstanceOf(RemoteError);
  });

  it('rejects invalid params with a message naming the field, and keeps the link', async () => {
    const [host] = peers();
    await expect(host.request('ping', { t: 'soon' as unknown as number })).rejects.toThrow(/field t/);
    expect(await host.ping()).toBeGreaterThanOrEqual(0);
  });

  it('times out a request that gets no answer', async () => {
    const { peer } = rawRemote();
    await expect(peer.request('info', {}, { timeoutMs: 50 })).rejects.toBeInstanceOf(RequestTimeoutError);
  });

  it('close(reason) fails every pending request and later ones', async () => {
    const { peer } = rawRemote();
    const a = peer.request('info', {});
    const b = peer.request('ports.snapshot', {});
    peer.close('test over');
    await expect(a).rejects.toBeInstanceOf(LinkClosedError);
    await expect(b).rejects.toThrow(/test over/);
    await expect(peer.request('info', {})).rejects.toThrow(/test over/);
  });

  it('closes the link when the remote answers with a result of the wrong shape', async () => {
    const [host, guest] = peers();
    guest.handle('info', () => ({ ...info, pid: -5 }) as Info);
    const reason = closed(host);
    await expect(host.request('info', {})).rejects.toThrow(/result of info: field pid/);
    expect(await reason).toMatch(/field pid/);
  });

  it('ignores events it does not know (a newer remote), reporting each name once, and keeps the link', async () => {
    const { peer, send } = rawRemote();
    const unknown: string[] = [];
    peer.on('unknownEvent', (name: string) => unknown.push(name));
    const got = new Promise((resolve) => peer.onEvent('udp.close', resolve));
    const future = (e: string) => encodeFrame({ t: 'evt', e, d: { anything: [1, 'two'] } });
    send(Buffer.concat([hello, future('vm.suspend'), future('vm.suspend'), future('rm -rf'), future('vm.suspend')]));
    send(encodeFrame({ t: 'evt', e: 'udp.close', d: { flow: 3 } }));
    expect(await got).toEqual({ flow: 3 });
    expect(unknown).toEqual(['vm.suspend', 'rm -rf']);
    expect(peer.closed).toBe(false);
  });

  it('answers a request for a method it does not know with an error, and keeps the link', async () => {
    const [a, b] = pipePair();
    const peer = new Peer(a, { agent: 'host/test' });
    const decoder = new FrameDecoder();
    const replies: unknown[] = [];
    b.on('data', (chunk: Buffer) => replies.push(...decoder.push(chunk)));
    b.write(Buffer.concat([hello, encodeFrame({ t: 'req', id: 7, m: 'vm.suspend', p: { now: true } })]));
    b.write(encodeFrame({ t: 'req', id: 8, m: 'ping', p: { t: 1 } }));
    await new Promise<void>((resolve) => {
      const check = () => (replies.length >= 3 ? resolve() : setTimeout(check, 5));
      check();
    });
    expect(replies[1]).toEqual({
      t: 'res',
      id: 7,
      ok: false,
      r: null,
      e: { code: 'unknown_method', message: 'no method vm.suspend' },
    });
    expect(replies[2]).toMatchObject({ t: 'res', id: 8, ok: true });
    expect(peer.closed).toBe(false);
  });

  it('refuses a different protocol version, naming both sides and their versions', async () => {
    const { peer, send } = rawRemote();
    const reason = closed(peer);
    send(encodeFrame({ t: 'hello', v: 99, agent: 'future/9', caps: [] }));
    expect(await reason).toBe('protocol version mismatch: this side (host/test) speaks 1, future/9 speaks 99');
  });

  it("keeps the other side's text (agent name, error answers, event names, keys) to one inert line", async () => {
    const forged = '\n[2026-12-02 13:00:00.000] ERROR: [ssh] FORGED\u001b[2J';
    const one = (text: string) => {
      for (const c of ['\n', '\r', '\u001b']) expect(text).not.toContain(c);
      expect(text).toContain('FORGED');
    };
    const mismatch = rawRemote();
    const reason = closed(mismatch.peer);
    mismatch.send(encodeFrame({ t: 'hello', v: 99, agent: `evil${forged}`, caps: [] }));
    one(await reason);

    const { peer, send } = rawRemote();
    const unknown: string[] = [];
    peer.on('unknownEvent', (name: string) => unknown.push(name));
    send(hello);
    send(encodeFrame({ t: 'evt', e: `vm${forged}`, d: {} }));
    const answer = peer.request('info', {});
    send(
      encodeFrame({
        t: 'res',
        id: 1,
        ok: false,
        r: null,
        e: { code: `x${forged}`, message: `y${forged}`.repeat(60) },
      }),
    );
    const err = await answer.then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(RemoteError);
    one(err!.message);
    // Cut, and saying how long it was.
    expect(err!.message.length).toBeLessThan(700);
    expect(err!.message).toContain('characters)');
    expect(unknown).toHaveLength(1);
    one(unknown[0]);
    // A key of its own choosing in a strict message closes the link with the key made inert.
    const bad = closed(peer);
    send(encodeFrame({ t: 'evt', e: 'ports.delta', d: { seq: 1, added: [], removed: [], '\nERROR: FORGED': 1 } }));
    one(await bad);
  });

  it('refuses an info whose startedAt no date can hold', async () => {
    const [host, guest] = peers();
    guest.handle('info', () => ({ ...info, startedAt: 9e15 }));
    await expect(host.request('info', {})).rejects.toThrow(/field startedAt/);
  });

  it('tells a future hello (with fields it does not know) apart as a version mismatch', async () => {
    const { peer, send } = rawRemote();
    const error = new Promise<Error | undefined>((resolve) =>
      peer.once('close', (_r: string, e?: Error) => resolve(e)),
    );
    send(encodeFrame({ t: 'hello', v: 2, agent: 'tether-guest/2.0.0', caps: [], pid: 4242, features: { x: 1 } }));
    expect(await error).toBeInstanceOf(ProtocolVersionError);
  });

  it('sends only the hello fields that agents reading hello strictly accept', () => {
    const out = new PassThrough();
    const stream = Duplex.from({ readable: new PassThrough(), writable: out });
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    const peer = new Peer(stream, { agent: 'tether/test', caps: ['a'] });
    const [hello] = new FrameDecoder().push(Buffer.concat(chunks));
    expect(Object.keys(hello as object).sort()).toEqual(['agent', 'caps', 't', 'v']);
    peer.close('done');
  });

  const hostile: [string, Buffer][] = [
    ['random bytes', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ['an oversized frame', Buffer.from([0xff, 0xff, 0xff, 0xff])],
    ['truncated msgpack', Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from([0x93, 0x01, 0xc1])])],
    ['a message before hello', encodeFrame({ t: 'evt', e: 'udp.close', d: { flow: 1 } })],
    ['a wrong type', Buffer.concat([hello, encodeFrame({ t: 'evt', e: 'udp.close', d: { flow: 'x' } })])],
    ['an unknown envelope', Buffer.concat([hello, encodeFrame({ t: 'boom' })])],
    [
      'a port out of range',
      Buffer.concat([
        hello,
        encodeFrame({ t: 'evt', e: 'ports.delta', d: { seq: 1, added: [{ ...listener, port: 70000 }], removed: [] } }),
      ]),
    ],
    [
      'an invalid address',
      Buffer.concat([
        hello,
        encodeFrame({ t: 'evt', e: 'ports.delta', d: { seq: 1, added: [{ ...listener, ip: '1.2.3' }], removed: [] } }),
      ]),
    ],
    ['a deep nesting bomb', Buffer.concat([Buffer.from([0x00, 0x03, 0x0d, 0x41]), Buffer.alloc(200_001, 0x91)])],
  ];
  for (const [what, bytes] of hostile) {
    it(`ends the link with a clear reason on ${what}`, async () => {
      const { peer, send } = rawRemote();
      const reason = closed(peer);
      send(bytes);
      expect((await reason).length).toBeGreaterThan(10);
      expect(peer.closed).toBe(true);
    });
  }

  it('holds frames before hello to the size of a hello, and later ones to the message budget', async () => {
    const early = rawRemote();
    const tooEarly = closed(early.peer);
    early.send(encodeFrame({ t: 'evt', e: 'udp.reply', d: { flow: 1, data: Buffer.alloc(40_000) } }));
    expect(await tooEarly).toBe('frame of 40040 bytes exceeds the maximum of 32768 bytes (before hello)');

    const bomb = rawRemote();
    const refused = closed(bomb.peer);
    const keys = 100_000;
    const map = Buffer.alloc(5 + keys * 8, 0xc0);
    map[0] = 0xdf;
    map.writeUInt32BE(keys, 1);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(map.length, 0);
    bomb.send(Buffer.concat([hello, header, map]));
    expect(await refused).toBe(
      'msgpack payload of 800005 bytes refused before decoding: a map of 100000 entries (at most 32)',
    );
  });

  it('accepts a large message in the same chunk as the hello that allows it', async () => {
    const { peer, send } = rawRemote();
    const got = new Promise((resolve) => peer.onEvent('udp.reply', resolve));
    send(Buffer.concat([hello, encodeFrame({ t: 'evt', e: 'udp.reply', d: { flow: 1, data: Buffer.alloc(60_000) } })]));
    expect(await got).toMatchObject({ flow: 1 });
    expect(peer.closed).toBe(false);
  });

  it('closes the link when the remote floods requests but never reads the answers', async () => {
    const [a, b] = pipePair();
    b.on('error', () => {});
    const peer = new Peer(a, { agent: 'host/test', maxBuffered: 64 * 1024 });
    const reason = closed(peer);
    const pings = Array.from({ length: 5000 }, (_, i) => encodeFrame({ t: 'req', id: i + 1, m: 'ping', p: { t: i } }));
    b.write(Buffer.concat([hello, ...pings])); // b never reads: every answer stays buffered
    expect(await reason).toMatch(/remote is not reading: \d+ bytes wait unsent \(limit 65536\)/);
  });

  it('survives thousands of random inputs without throwing out of the event loop', async () => {
    let seed = 12345;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const valid = [
      encodeFrame({ t: 'evt', e: 'ports.delta', d: { seq: 1, added: [listener], removed: [] } }),
      encodeFrame({ t: 'req', id: 5, m: 'info', p: {} }),
      encodeFrame({ t: 'res', id: 5, ok: true, r: info }),
    ];
    let closedCount = 0;
    for (let i = 0; i < 3000; i++) {
      const { peer, send } = rawRemote();
      peer.on('close', () => closedCount++);
      const base = valid[i % valid.length];
      const mutated = Buffer.from(base);
      const flips = 1 + Math.floor(rand() * 4);
      for (let f = 0; f < flips; f++) mutated[4 + Math.floor(rand() * (mutated.length - 4))] = Math.floor(rand() * 256);
      const input =
        i % 3 === 0 ? Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 64) }, () => rand() * 256)) : mutated;
      send(Buffer.concat([hello, input]));
      await new Promise((r) => setImmediate(r));
      peer.close('done');
    }
    expect(closedCount).toBe(3000);
  });
});
