// The bridge against real ssh2 on both ends (an in-process ssh2 Server answering direct-tcpip) and real loopback
// sockets: the guest's EOF reaches the client as a clean end after all data; an SSH connection lost mid-reply
// reaches it as a reset, never as a clean end of a truncated reply; bytes read ahead of the channel are not lost.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection, ServerChannel } from 'ssh2';
import { afterEach, describe, expect, it } from 'vitest';
import { ssh2Pair } from '../../../test/helpers/ssh2-pair.js';
import { silentLogger } from '../log.js';
import { type ChannelSink, type GuestChannel, openDirectChannel } from '../ssh/direct-channel.js';
import { acceptEarly } from './accept-early.js';
import type { ForwardStats } from './binding.js';
import { bridge, openBridge, type PendingBridge } from './bridge.js';
import { type ClientEnd, type ClientSink, handleEnd, handleEnds, isTcpHandle } from './client-end.js';

type GuestBehaviour = (channel: ServerChannel) => void;

interface Rig {
  /** Connects a client to the host listener that bridges into the SSH connection. */
  connect(): net.Socket;
  stats: ForwardStats;
  /** The server side of the SSH connection, to cut it. */
  conn: Connection;
  /** Host-side sockets of the listener still open. */
  openSockets(): Promise<number>;
  /** Bytes the host side has read from its clients so far. */
  readByHost(): number;
  close(): Promise<void>;
}

/** How the host side holds its clients: a net.Socket each, or (TCP only) the accepted handle (client-end.ts). */
type ClientMode = 'socket' | 'handle';

/**
 * `held`: the guest answers channel opens only once it settles. `unixPath`: the host listener is a unix socket there
 * (its kernel buffers are small, so a reply backs up in the host socket itself).
 */
async function rig(
  mode: ClientMode,
  guest: GuestBehaviour,
  held: Promise<void> = Promise.resolve(),
  unixPath?: string,
): Promise<Rig> {
  const pair = await ssh2Pair({ tcpip: (accept) => void held.then(() => guest(accept())) });
  const stats: ForwardStats = { connections: 0, bytesIn: 0, bytesOut: 0 };
  const target = { kind: 'tcp', srcIP: '127.0.0.1', srcPort: 1, dstIP: '127.0.0.1', dstPort: 2 } as const;
  const open = (sink: ChannelSink, started: () => void) =>
    new Promise<GuestChannel>((resolve, reject) => {
      started();
      openDirectChannel(pair.client, target, sink, (err, ch) => (err || !ch ? reject(err) : resolve(ch)));
    });
  const accepted: net.Socket[] = [];
  const listener = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    accepted.push(s);
    bridge(s, open, { label: 'test', stats, log: silentLogger() });
  });
  const port = await new Promise<number>((resolve) => {
    if (unixPath) listener.listen(unixPath, () => resolve(0));
    else listener.listen(0, '127.0.0.1', () => resolve((listener.address() as net.AddressInfo).port));
  });
  // Handles the listener gave to the bridge, and what was read from them (a net.Socket counts its own).
  let handlesOpen = 0;
  let handleBytesRead = 0;
  if (mode === 'handle') {
    const counted = (end: ClientEnd): ClientEnd => {
      const start = end.start.bind(end);
      handlesOpen++;
      end.start = (sink: ClientSink) =>
        start({
          data: (chunk) => {
            handleBytesRead += chunk.length;
            sink.data(chunk);
          },
          end: () => sink.end(),
          drain: () => sink.drain(),
          error: (err) => sink.error(err),
          closed: () => {
            handlesOpen--;
            sink.closed();
          },
        });
      return end;
    };
    acceptEarly<PendingBridge>(
      listener,
      () => openBridge(open, { label: 'test', stats, log: silentLogger() }),
      (pending) => pending.cancel(),
      (client, pending) => {
        if (!isTcpHandle(client)) return false;
        pending.connect(counted(handleEnd(client)));
        return true;
      },
    );
  }
  return {
    connect: () =>
      unixPath
        ? net.connect({ path: unixPath, allowHalfOpen: true })
        : net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }),
    stats,
    conn: pair.conn,
    openSockets: () => new Promise((resolve) => listener.getConnections((_err, n) => resolve(n + handlesOpen))),
    readByHost: () => accepted.reduce((n, s) => n + s.bytesRead, handleBytesRead),
    async close() {
      await pair.close();
      await new Promise((r) => listener.close(r));
    },
  };
}

/** Collects what a client receives and how its connection ended. */
function outcome(s: net.Socket): Promise<{ data: string; ended: 'end' | string }> {
  return new Promise((resolve) => {
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      data += d;
    });
    s.on('end', () => resolve({ data, ended: 'end' }));
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ data, ended: err.code ?? err.message }));
  });
}

describe.each<ClientMode>(handleEnds ? ['socket', 'handle'] : ['socket'])('bridge, clients as %s', (mode) => {
  let r: Rig | undefined;
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it('passes the guest EOF on as a clean end after every byte, and counts both ways', async () => {
    r = await rig(mode, (ch) => ch.pipe(ch));
    const s = r.connect();
    const payload = 'x'.repeat(100_000);
    s.end(payload);
    expect(await outcome(s)).toEqual({ data: payload, ended: 'end' });
    await expect.poll(() => r?.stats).toEqual({ connections: 0, bytesIn: 100_000, bytesOut: 100_000 });
  });

  it('resets the client when the SSH connection is lost mid-reply, instead of ending a truncated reply', async () => {
    r = await rig(mode, (ch) => ch.write('partial'));
    const s = r.connect();
    const result = outcome(s);
    s.write('request');
    await expect.poll(() => r?.stats.bytesOut).toBe('partial'.length);
    r.conn.end();
    expect(await result).toEqual({ data: 'partial', ended: 'ECONNRESET' });
    await expect.poll(() => r?.stats.connections).toBe(0);
  });

  it('delivers the whole reply when the guest closes while the client, not reading yet, is still sending', async () => {
    const reply = 'y'.repeat(1536 * 1024); // within the SSH window, so the guest can send it all and close at once
    let guestClosed = false;
    r = await rig(mode, (ch) => {
      ch.on('data', () => {}); // the guest ignores the request
      ch.on('close', () => {
        guestClosed = true;
      });
      ch.end(reply); // data, EOF, CLOSE
    });
    const s = r.connect();
    s.pause(); // the reply backs up into the paused channel, so the channel's end waits for the client to read
    s.write('request');
    await expect.poll(() => guestClosed).toBe(true);
    for (let i = 0; i < 8; i++) s.write('more of the request after the guest closed');
    const result = outcome(s);
    s.resume(); // paused explicitly above: a 'data' listener alone does not restart the flow
    expect(await result).toEqual({ data: reply, ended: 'end' });
    s.end(); // the client's FIN must reach the bridge, though it last paused the socket for the channel
    await expect.poll(() => r?.openSockets()).toBe(0);
  });

  it('closes the client soon after the reply is out when the guest closes, so a client still sending fails', async () => {
    r = await rig(mode, (ch) => {
      ch.on('data', () => {});
      ch.end('bye'); // data, EOF, CLOSE: the service is gone
    });
    const s = r.connect();
    let data = '';
    let failed: string | null = null;
    s.setEncoding('utf8').on('data', (d: string) => {
      data += d;
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      failed = err.code ?? err.message;
    });
    // A client that streams on (an upload) must learn that nobody reads it any more, as `ssh -L` tells it.
    const sending = setInterval(() => !s.destroyed && s.write('x'.repeat(1024)), 20);
    try {
      await expect.poll(() => failed, { timeout: 10_000 }).toMatch(/^(EPIPE|ECONNRESET)$/);
    } finally {
      clearInterval(sending);
    }
    expect(data).toBe('bye');
    await expect.poll(() => r?.openSockets()).toBe(0);
  });

  it('still delivers a backed-up reply in full when the guest ends after the client did', async () => {
    const reply = 'r'.repeat(1536 * 1024); // within the SSH window, beyond a unix socket's kernel buffers
    let guestEnded = false;
    const dir = mkdtempSync(join(tmpdir(), 'tether-bridge-'));
    const guest: GuestBehaviour = (ch) => {
      ch.on('data', () => {});
      ch.on('end', () => {
        ch.end(reply); // data, EOF, CLOSE after the client's EOF
        guestEnded = true;
      });
    };
    r = await rig('socket', guest, Promise.resolve(), join(dir, 'host.sock'));
    const s = r.connect();
    s.pause(); // the reply backs up in the host socket: the guest's EOF finds bytes not yet with the kernel
    s.end('request');
    await expect.poll(() => guestEnded).toBe(true);
    await expect.poll(() => r?.stats.bytesOut).toBe(reply.length);
    const result = outcome(s);
    s.resume();
    expect(await result).toEqual({ data: reply, ended: 'end' });
    await expect.poll(() => r?.openSockets()).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads one chunk ahead while the channel opens, and sends it, the rest and the EOF once it is ready', async () => {
    let letIn = () => {};
    r = await rig(
      mode,
      (ch) => ch.pipe(ch),
      new Promise<void>((resolve) => {
        letIn = resolve;
      }),
    );
    const s = r.connect();
    const result = outcome(s);
    const payload = 'z'.repeat(300_000);
    s.end(payload);
    await expect.poll(() => r?.readByHost()).toBeGreaterThan(0);
    // Asserting an absence: without the pause after the first chunk, the rest would arrive within this time. (The
    // socket may have read a second 64 KiB from the kernel in the same turn as the first, before the pause.)
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(r.readByHost()).toBeLessThanOrEqual(128 * 1024);
    // Read, but not in the guest yet: the counter says what went into the channel.
    expect(r.stats.bytesIn).toBe(0);
    letIn();
    expect(await result).toEqual({ data: payload, ended: 'end' });
    expect(r.stats.bytesIn).toBe(payload.length);
  });

  it('moves more than the SSH window both ways, intact and in order', async () => {
    r = await rig(mode, (ch) => ch.pipe(ch));
    const s = r.connect();
    const payload = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE(i, i);
    const received: Buffer[] = [];
    s.on('data', (d: Buffer) => received.push(d));
    const ended = new Promise((resolve) => s.on('end', resolve));
    s.end(payload);
    await ended;
    expect(Buffer.concat(received).equals(payload)).toBe(true);
    await expect.poll(() => r?.stats.connections).toBe(0);
  });

  it('ends the client cleanly when the SSH connection is lost after the guest EOF', async () => {
    r = await rig(mode, (ch) => {
      ch.write('complete reply');
      ch.eof(); // EOF only: the CLOSE never comes, the connection goes first
    });
    const s = r.connect();
    const result = outcome(s);
    s.write('request');
    await expect.poll(() => r?.stats.bytesOut).toBe('complete reply'.length);
    r.conn.end();
    expect(await result).toEqual({ data: 'complete reply', ended: 'end' });
    s.end();
  });

  it('closes the guest channel when the client connection is reset', async () => {
    let guestClosed = false;
    r = await rig(mode, (ch) => {
      ch.on('data', () => ch.write('working'));
      ch.on('close', () => {
        guestClosed = true;
      });
    });
    const s = r.connect();
    s.write('request');
    await new Promise((resolve) => s.once('data', resolve));
    s.resetAndDestroy();
    await expect.poll(() => guestClosed).toBe(true);
    await expect.poll(() => r?.stats.connections).toBe(0);
  });
});
