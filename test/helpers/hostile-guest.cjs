// A hostile stand-in for tether-guest, run inside the testbed guest on the configured agent socket. Each connection
// follows the mode last written to stdin as a JSON line ({"name": ..., ...}); a new mode drops open connections so
// the host reconnects into it. Prints `mode NAME` once a mode is in force and `sent NAME` after a mode's misdeed.
// Usage: node hostile-guest.cjs SOCKET MSGPACKR_ENTRY
const net = require('node:net');
const fs = require('node:fs');
const readline = require('node:readline');

const [socketPath, msgpackrEntry] = process.argv.slice(2);
const { Packr } = require(msgpackrEntry);
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

const MAX_FRAME = 16 * 1024 * 1024;
let mode = { name: 'healthy' };
const conns = new Set();

function header(length) {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(length >>> 0);
  return h;
}

function frame(message) {
  const payload = packr.pack(message);
  return Buffer.concat([header(payload.length), payload]);
}

function info() {
  return {
    version: '0.0.0-hostile',
    kernel: 'hostile',
    arch: process.arch,
    hostname: mode.hostname ?? 'hostile',
    uptimeSec: 1,
    startedAt: Date.now(),
    pid: process.pid,
    uid: process.getuid(),
    caps: [],
    scanIntervalMs: 100,
    lastScanMs: 0,
    listeners: 0,
  };
}

function listener(ip, port, proto = 'tcp') {
  return { proto, family: ip.includes(':') ? 6 : 4, ip, port, pid: null, command: null };
}

/** A `res` frame for a snapshot of `count` listeners, built from one template with the port patched in. */
function hugeSnapshotFrame(id, count) {
  const prefix = packr.pack({ t: 'res', id, ok: true, r: { seq: 1, listeners: [] } });
  const template = packr.pack(listener('127.0.0.1', 0x1234));
  const portAt = template.indexOf(Buffer.from([0xcd, 0x12, 0x34])) + 1;
  const items = Buffer.allocUnsafe(template.length * count);
  for (let i = 0; i < count; i++) {
    const at = i * template.length;
    template.copy(items, at);
    items.writeUInt16BE(1024 + (i % 64_000), at + portAt);
  }
  // The empty listeners array (0x90, the last byte) becomes an array32 of `count`.
  const arrayHead = Buffer.alloc(5);
  arrayHead[0] = 0xdd;
  arrayHead.writeUInt32BE(count, 1);
  const payloadLength = prefix.length - 1 + arrayHead.length + items.length;
  return [header(payloadLength), prefix.subarray(0, prefix.length - 1), arrayHead, items];
}

/** `count` distinct listeners; the first ones on `ports` at 127.0.0.1, the rest spread over other loopbacks. */
function manyListeners(count, ports) {
  const out = ports.map((p) => listener('127.0.0.1', p));
  for (let i = 0; out.length < count; i++)
    out.push(listener(`127.1.${100 + (i % 100)}.${100 + (((i / 100) % 100) | 0)}`, 1024 + ((i / 10_000) | 0)));
  return out;
}

function snapshotFor(m) {
  if (m.name === 'many-ports') return manyListeners(m.count, m.ports);
  if (m.name === 'bad-snapshot') return [m.listener];
  return m.listeners ?? [];
}

/** Writes frames with backpressure; resolves when all are queued. */
async function writeAll(sock, buffers) {
  for (const b of buffers) {
    if (sock.destroyed) return;
    if (!sock.write(b)) await new Promise((r) => sock.once('drain', r).once('close', r));
  }
}

function pseudoRandom(n, seed) {
  const out = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const done = (name) => console.log(`sent ${name}`);

/** Misdeeds that happen before any hello. */
function misbehaveAtOnce(sock, m) {
  switch (m.name) {
    case 'garbage': {
      // A plausible header (within the frame limit) with random bytes behind it, then more random bytes.
      const body = pseudoRandom(4096, 0x7e7e7e7e);
      void writeAll(sock, [header(body.length), body, pseudoRandom(65536, 99)]).then(() => done(m.name));
      return true;
    }
    case 'random-stream':
      void writeAll(sock, [pseudoRandom(1 << 20, 12345)]).then(() => done(m.name));
      return true;
    case 'oversized-header':
      void writeAll(sock, [header(0xffff_fff0), pseudoRandom(1024, 7)]).then(() => done(m.name));
      return true;
    case 'deep-nesting': {
      const payload = Buffer.alloc(200_001, 0x91); // fixarray of one element, 200,000 deep
      payload[200_000] = 0xc0;
      void writeAll(sock, [header(payload.length), payload]).then(() => done(m.name));
      return true;
    }
    case 'no-hello':
      void writeAll(sock, [frame({ t: 'evt', e: 'ports.delta', d: { seq: 1, added: [], removed: [] } })]).then(() =>
        done(m.name),
      );
      return true;
    case 'wrong-version':
      void writeAll(sock, [frame({ t: 'hello', v: 999, agent: 'tether-guest/9.9.9', caps: [] })]).then(() =>
        done(m.name),
      );
      return true;
    default:
      return false;
  }
}

async function onRequest(sock, m, msg) {
  const reply = (r) => writeAll(sock, [frame({ t: 'res', id: msg.id, ok: true, r })]);
  if (msg.m === 'ping') return reply(msg.p);
  if (msg.m === 'info') return reply(info());
  if (msg.m !== 'ports.subscribe' && msg.m !== 'ports.snapshot') {
    return writeAll(sock, [frame({ t: 'res', id: msg.id, ok: false, r: null, e: { code: 'nope', message: 'no' } })]);
  }
  if (m.name === 'huge-snapshot') {
    await writeAll(sock, hugeSnapshotFrame(msg.id, m.count));
    return done(m.name);
  }
  if (m.name === 'many-ports') {
    const payload = packr.pack({ t: 'res', id: msg.id, ok: true, r: { seq: 1, listeners: snapshotFor(m) } });
    if (payload.length > MAX_FRAME) throw new Error(`many-ports snapshot of ${payload.length} bytes is over the limit`);
    await writeAll(sock, [header(payload.length), payload]);
    return done(m.name);
  }
  await reply({ seq: 1, listeners: snapshotFor(m) });
  if (m.name === 'drop-after-subscribe') {
    setTimeout(() => sock.end(), 50);
    done(m.name);
  }
  if (m.name === 'bad-delta') {
    await writeAll(sock, [frame({ t: 'evt', e: 'ports.delta', d: { seq: 2, added: [m.listener], removed: [] } })]);
    done(m.name);
  }
  if (m.name === 'delta-flood') {
    // Every port of m.ports added, then removed, m.rounds times, as fast as the socket takes it; then m.final added.
    const all = m.ports.map((p) => listener('127.0.0.1', p));
    const frames = [];
    let seq = 1;
    for (let i = 0; i < m.rounds; i++) {
      frames.push(frame({ t: 'evt', e: 'ports.delta', d: { seq: ++seq, added: all, removed: [] } }));
      frames.push(frame({ t: 'evt', e: 'ports.delta', d: { seq: ++seq, added: [], removed: all } }));
    }
    const final = [listener('127.0.0.1', m.final)];
    frames.push(frame({ t: 'evt', e: 'ports.delta', d: { seq: ++seq, added: final, removed: [] } }));
    await writeAll(sock, frames);
    done(m.name);
  }
  if (m.name === 'unknown-events') {
    const events = [];
    for (let i = 0; i < m.count; i++) events.push(frame({ t: 'evt', e: `nope${i}`, d: {} }));
    await writeAll(sock, events);
    done(m.name);
  }
  if (m.name === 'unhandled-events') {
    const events = [];
    for (let i = 0; i < m.count; i++) events.push(frame({ t: 'evt', e: 'fs.events', d: { root: '/x', events: [] } }));
    await writeAll(sock, events);
    done(m.name);
  }
}

/** A UDP flood in answer to the host's first datagram: replies on its flow, replies on unknown flows, then one reply
 * above the datagram limit. */
async function udpFlood(sock, m, dgram) {
  const data = Buffer.alloc(m.size, 0x55);
  const frames = [];
  for (let i = 0; i < m.count; i++) {
    frames.push(frame({ t: 'evt', e: 'udp.reply', d: { flow: dgram.flow, data } }));
    frames.push(frame({ t: 'evt', e: 'udp.reply', d: { flow: (dgram.flow + 1 + i) >>> 0, data } }));
  }
  await writeAll(sock, frames);
  await writeAll(sock, [frame({ t: 'evt', e: 'udp.reply', d: { flow: dgram.flow, data: Buffer.alloc(70_000) } })]);
  done(m.name);
}

function serve(sock) {
  const m = mode;
  conns.add(sock);
  sock.on('close', () => conns.delete(sock));
  sock.on('error', () => {});
  if (misbehaveAtOnce(sock, m)) {
    sock.resume();
    return;
  }
  let buffered = Buffer.alloc(0);
  let flooded = false;
  sock.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
      const length = buffered.readUInt32BE(0);
      const msg = packr.unpack(buffered.subarray(4, 4 + length));
      buffered = buffered.subarray(4 + length);
      if (msg.t === 'req') void onRequest(sock, m, msg).catch((err) => console.error(err.message));
      if (msg.t === 'evt' && msg.e === 'udp.dgram' && m.name === 'udp-flood' && !flooded) {
        flooded = true;
        void udpFlood(sock, m, msg.d);
      }
    }
  });
  void writeAll(sock, [frame({ t: 'hello', v: 1, agent: 'tether-guest/0.0.0-hostile', caps: [] })]);
  if (m.name === 'key-bomb') void writeAll(sock, keyBombFrame(m.keys)).then(() => done(m.name));
}

/** One map32 of `keys` distinct 6-character keys with nil values: cheap to send, costly to decode. */
function keyBombFrame(keys) {
  const payload = Buffer.alloc(5 + keys * 8);
  payload[0] = 0xdf;
  payload.writeUInt32BE(keys, 1);
  for (let i = 0; i < keys; i++) {
    const at = 5 + i * 8;
    payload[at] = 0xa6;
    payload.write(i.toString(36).padStart(6, 'a'), at + 1, 'latin1');
    payload[at + 7] = 0xc0;
  }
  return [header(payload.length), payload];
}

fs.rmSync(socketPath, { force: true });
const server = net.createServer(serve);
server.listen(socketPath, () => {
  fs.chmodSync(socketPath, 0o600);
  console.log('listening');
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  mode = JSON.parse(line);
  for (const sock of conns) sock.destroy();
  console.log(`mode ${mode.name}`);
});
process.stdin.on('end', () => process.exit(0));
