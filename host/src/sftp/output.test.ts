import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FXP } from './constants.js';
import { ReplyWriter } from './output.js';
import { PacketWriter, SftpPacketSplitter } from './packet.js';
import { serveSftp } from './server.js';

/** A sink that holds every write until released, so the stream's buffer fills up. */
class HeldSink extends Writable {
  readonly chunks: Buffer[] = [];
  private held: Array<() => void> = [];
  private releasing = false;

  constructor() {
    super({ highWaterMark: 1024 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error) => void): void {
    this.chunks.push(chunk);
    if (this.releasing) cb();
    else this.held.push(() => cb());
  }

  release(): void {
    this.releasing = true;
    for (const cb of this.held.splice(0)) cb();
  }
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('ReplyWriter', () => {
  it('writes the replies of one turn as one buffer, large READ replies included', async () => {
    const writes: Buffer[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        writes.push(chunk);
        cb();
      },
    });
    const out = new ReplyWriter(sink, () => {});
    const big = Buffer.alloc(32 * 1024 + 13, 7);
    out.send(Buffer.from('a'));
    out.send(big);
    out.send(Buffer.from('b'));
    await until('flush', () => writes.length === 1);
    expect(writes[0]).toEqual(Buffer.concat([Buffer.from('a'), big, Buffer.from('b')]));
    out.send(big);
    await until('second flush', () => writes.length === 2);
    expect(writes[1]).toBe(big);
  });

  it('reports a full stream', async () => {
    const sink = new HeldSink();
    let blocked = 0;
    const out = new ReplyWriter(sink, () => blocked++);
    out.send(Buffer.alloc(4096));
    await until('blocked', () => blocked === 1);
  });
});

describe('session backpressure', () => {
  it('stops reading requests while replies cannot be written, then serves them all', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tether-sftp-bp-'));
    const input = new PassThrough();
    const sink = new HeldSink();
    const session = serveSftp(Duplex.from({ readable: input, writable: sink }), { root });
    input.write(new PacketWriter(FXP.INIT).u32(3).finish());
    const batch = 5000;
    const sendBatch = (first: number) => {
      for (let id = first; id < first + batch; id++) {
        input.write(new PacketWriter(FXP.REALPATH).u32(id).string('.').finish());
      }
    };
    sendBatch(1);
    // The first batch is read and answered; its replies fill the held sink.
    await until('first batch answered', () => session.stats.requests === batch + 1 && sink.chunks.length > 0);
    sendBatch(batch + 1);
    for (let turn = 0; turn < 10; turn++) await new Promise((r) => setImmediate(r));
    // Input is paused: the second batch stays in the input stream (the adapter reads ahead at most its own buffer).
    expect(input.readableLength).toBeGreaterThan(0);
    expect(session.stats.requests).toBeLessThan(2 * batch + 1);

    sink.release();
    const decoder = new SftpPacketSplitter(1 << 20);
    let replies = 0;
    await until('all replies written', () => {
      for (const c of sink.chunks.splice(0)) replies += decoder.push(c).length;
      return replies === 2 * batch + 1; // VERSION included
    });
    expect(session.stats.requests).toBe(2 * batch + 1);
    session.close();
  });
});
