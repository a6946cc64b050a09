// DirectChannel against the pinned ssh2 on both ends (an in-process ssh2 Server as the guest): the internals it
// relies on are there, ssh2's own channels keep working beside it, the sink gets its channel before the open's
// callback, the guest's window is topped up only while the sink takes data, writers wait while the SSH socket's
// queue is long, the guest's CLOSE is answered a turn later, refusals arrive as errors, and streamlocal opens reach
// the socket path asked for.
import type { ServerChannel } from 'ssh2';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type GuestHandlers, type Ssh2Pair, ssh2Pair } from '../../../test/helpers/ssh2-pair.js';
import { type ChannelSink, DirectChannel, type DirectTarget, openDirectChannel } from './direct-channel.js';

const TCP: DirectTarget = { kind: 'tcp', srcIP: '127.0.0.1', srcPort: 1, dstIP: '127.0.0.1', dstPort: 2 };

/** A sink that records what arrives; `take` decides what `data` returns. */
function recorder(take: () => boolean = () => true) {
  const got = { bytes: 0, ended: false, closed: null as null | { lost: boolean }, drains: 0 };
  const sink: ChannelSink = {
    data: (chunk) => {
      got.bytes += chunk.length;
      return take();
    },
    end: () => {
      got.ended = true;
    },
    close: (lost) => {
      got.closed = { lost };
    },
    drain: () => {
      got.drains++;
    },
  };
  return { got, sink };
}

function open(pair: Ssh2Pair, target: DirectTarget, sink: ChannelSink): Promise<DirectChannel> {
  return new Promise((resolve, reject) =>
    openDirectChannel(pair.client, target, sink, (err, ch) => (err || !ch ? reject(err) : resolve(ch))),
  );
}

describe('DirectChannel', () => {
  let pair: Ssh2Pair | undefined;
  const start = async (guest: GuestHandlers) => {
    pair = await ssh2Pair(guest);
    return pair;
  };
  afterEach(async () => {
    await pair?.close();
    pair = undefined;
  });

  it('is what ssh2 keeps in its channel table, while ssh2 still builds its own channels for its own opens', async () => {
    const guests: ServerChannel[] = [];
    const p = await start({ tcpip: (accept) => guests.push(accept()) });
    const ch = await open(p, TCP, recorder().sink);
    expect(ch).toBeInstanceOf(DirectChannel);
    const table = (p.client as unknown as { _chanMgr: { get(id: number): unknown } })._chanMgr;
    expect(table.get(ch.incoming.id)).toBe(ch);
    const own = await new Promise<{ write: unknown; pipe: unknown }>((resolve, reject) =>
      p.client.forwardOut('127.0.0.1', 1, '127.0.0.1', 2, (err, c) => (err ? reject(err) : resolve(c))),
    );
    expect(own).not.toBeInstanceOf(DirectChannel);
    expect(typeof own.pipe).toBe('function');
  });

  it("hands the sink its channel while the confirmation is handled, before the open's callback", async () => {
    const p = await start({ tcpip: (accept) => accept() });
    const order: string[] = [];
    let fromSink: unknown;
    const { sink } = recorder();
    const ch = await new Promise<DirectChannel | undefined>((resolve, reject) =>
      openDirectChannel(
        p.client,
        TCP,
        {
          ...sink,
          opened: (channel) => {
            order.push('opened');
            fromSink = channel;
          },
        },
        (err, channel) => {
          order.push('callback');
          if (err) reject(err);
          else resolve(channel);
        },
      ),
    );
    expect(order).toEqual(['opened', 'callback']);
    expect(fromSink).toBe(ch);
  });

  it('stops topping up the window while the sink refuses data, and resumes it', async () => {
    let guest: ServerChannel | undefined;
    const p = await start({ tcpip: (accept) => (guest = accept()) });
    let accepting = false;
    const { got, sink } = recorder(() => accepting);
    const ch = await open(p, TCP, sink);
    const total = 5 * 1024 * 1024;
    (guest as ServerChannel).end(Buffer.alloc(total));
    // The guest can send the window it was granted (2 MiB) and no more.
    await expect.poll(() => got.bytes).toBe(2 * 1024 * 1024);
    // Asserting an absence: a window top-up would have let more arrive within this time.
    await new Promise((r) => setTimeout(r, 200));
    expect(got.bytes).toBe(2 * 1024 * 1024);
    accepting = true;
    ch.resume();
    await expect.poll(() => got.bytes).toBe(total);
    await expect.poll(() => got.ended).toBe(true);
    await expect.poll(() => got.closed).toEqual({ lost: false });
  });

  it('holds back writes beyond the window, sends them as it grows, and sends the EOF after them', async () => {
    let received = 0;
    let guestEof = false;
    let guest: ServerChannel | undefined;
    const p = await start({
      tcpip: (accept) => {
        guest = accept();
        guest.pause(); // not reading: the guest grants no more window for now
        guest.on('data', (d: Buffer) => {
          received += d.length;
        });
        guest.on('end', () => {
          guestEof = true;
        });
      },
    });
    const { got, sink } = recorder();
    const ch = await open(p, TCP, sink);
    const total = 5 * 1024 * 1024;
    expect(ch.write(Buffer.alloc(total))).toBe(false);
    ch.end();
    expect(guestEof).toBe(false);
    guest?.resume();
    await expect.poll(() => received).toBe(total);
    await expect.poll(() => guestEof).toBe(true);
    expect(got.drains).toBe(1);
  });

  it('tells writers to wait while the SSH socket has a long queue, though window is left, and drains them after', async () => {
    let received = 0;
    const p = await start({
      tcpip: (accept) => {
        accept().on('data', (d: Buffer) => {
          received += d.length;
        });
      },
    });
    const sinks = [recorder(), recorder()];
    const a = await open(p, TCP, sinks[0].sink);
    const b = await open(p, TCP, sinks[1].sink);
    // Corked, the socket queues everything: the queue stands for a kernel that takes no more.
    const sock = (p.client as unknown as { _sock: { cork(): void; uncork(): void; writableLength: number } })._sock;
    sock.cork();
    expect(a.write(Buffer.alloc(128 * 1024))).toBe(true);
    expect(a.write(Buffer.alloc(256 * 1024))).toBe(false); // 384 KiB queued, 1.6 MiB of window left
    expect(b.write(Buffer.alloc(1024))).toBe(false);
    expect(sock.writableLength).toBeGreaterThan(256 * 1024);
    sock.uncork();
    await expect.poll(() => sinks.map((s) => s.got.drains)).toEqual([1, 1]);
    await expect.poll(() => received).toBe(385 * 1024);
  });
  it('sends nothing after its CLOSE, though window for held-back data arrives afterwards', async () => {
    let guest: ServerChannel | undefined;
    let guestClosed = false;
    const p = await start({
      tcpip: (accept) => {
        guest = accept();
        guest.pause();
        guest.on('close', () => {
          guestClosed = true;
        });
      },
    });
    const internals = p.client as unknown as {
      _protocol: { channelData: unknown; _handlers: Record<string, unknown> };
    };
    const ch = await open(p, TCP, recorder().sink);
    expect(ch.write(Buffer.alloc(5 * 1024 * 1024))).toBe(false);
    await expect.poll(() => guest !== undefined).toBe(true);
    let adjusts = 0;
    const handlers = internals._protocol._handlers;
    const onAdjust = handlers.CHANNEL_WINDOW_ADJUST as (...args: unknown[]) => void;
    handlers.CHANNEL_WINDOW_ADJUST = (...args: unknown[]) => {
      adjusts++;
      onAdjust(...args);
    };
    const sent = vi.spyOn(internals._protocol as { channelData: () => void }, 'channelData');
    guest?.resume(); // the guest reads and grants window, while our CLOSE is on its way
    ch.close();
    await expect.poll(() => adjusts).toBeGreaterThan(0);
    await expect.poll(() => guestClosed).toBe(true);
    expect(sent).not.toHaveBeenCalled();
  });

  it("answers the guest's CLOSE after the turn that closed the sink (the client's FIN goes first), once", async () => {
    let guest: ServerChannel | undefined;
    let guestClosed = false;
    const p = await start({
      tcpip: (accept) => {
        guest = accept();
        guest.resume(); // ssh2 emits 'close' only once its readable side has ended
        guest.on('close', () => {
          guestClosed = true;
        });
      },
    });
    const protocol = (p.client as unknown as { _protocol: { channelClose: () => void } })._protocol;
    const answered = vi.spyOn(protocol, 'channelClose');
    let answeredAtSinkClose: number | null = null;
    const { got, sink } = recorder();
    await open(p, TCP, {
      ...sink,
      close: (lost) => {
        answeredAtSinkClose = answered.mock.calls.length;
        sink.close(lost);
      },
    });
    await expect.poll(() => guest !== undefined).toBe(true);
    guest?.close();
    await expect.poll(() => got.closed).toEqual({ lost: false });
    expect(answeredAtSinkClose).toBe(0);
    await expect.poll(() => guestClosed).toBe(true);
    expect(answered).toHaveBeenCalledTimes(1);
  });

  it("drops the answer to a guest's CLOSE when the connection is lost before it goes out", async () => {
    let guest: ServerChannel | undefined;
    const p = await start({ tcpip: (accept) => (guest = accept()) });
    const protocol = (p.client as unknown as { _protocol: { channelClose: () => void } })._protocol;
    const answered = vi.spyOn(protocol, 'channelClose');
    const { got, sink } = recorder();
    await open(p, TCP, {
      ...sink,
      close: (lost) => {
        sink.close(lost);
        p.client.end();
      },
    });
    await expect.poll(() => guest !== undefined).toBe(true);
    guest?.close();
    await expect.poll(() => got.closed).toEqual({ lost: false });
    // The answer is due two loop turns after the sink's close.
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
    expect(answered).not.toHaveBeenCalled();
  });

  it('reports a refused open as an error, and a lost connection as a lost close', async () => {
    const p = await start({ tcpip: (_accept, reject) => reject() });
    await expect(open(p, TCP, recorder().sink)).rejects.toThrow(/open failure/i);
    await p.close();
    const q = await start({ tcpip: (accept) => accept() });
    const { got, sink } = recorder();
    await open(q, TCP, sink);
    q.conn.end();
    await expect.poll(() => got.closed).toEqual({ lost: true });
  });

  it('opens streamlocal channels to the socket path asked for', async () => {
    const paths: string[] = [];
    const p = await start({
      streamlocal: (accept, _reject, path) => {
        paths.push(path);
        accept().end('hello');
      },
    });
    const { got, sink } = recorder();
    await open(p, { kind: 'unix', socketPath: '/run/guest.sock' }, sink);
    await expect.poll(() => got.closed).toEqual({ lost: false });
    expect(paths).toEqual(['/run/guest.sock']);
    expect(got.bytes).toBe(5);
    expect(got.ended).toBe(true);
  });
});
