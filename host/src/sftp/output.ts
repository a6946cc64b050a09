// Reply output for one session: replies produced during one event-loop turn are written together, small ones
// coalesced into a single buffer (one write syscall, or one SSH channel packet, for many STATUS/ATTRS replies)
// while large READ replies pass through uncopied. Reports backpressure to the session.

import type { Writable } from 'node:stream';

/** Replies smaller than this are merged with their neighbours; larger ones are written as they are. */
const COALESCE_BELOW = 16 * 1024;

export class ReplyWriter {
  private pending: Buffer[] = [];
  private scheduled = false;

  /** `onBlocked` runs when the stream's buffer is full; the stream's own 'drain' event signals the end of it. */
  constructor(
    private readonly stream: Writable,
    private readonly onBlocked: () => void,
  ) {}

  send(packet: Buffer): void {
    this.pending.push(packet);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /** Writes everything queued now (also used before the stream is ended). */
  readonly flush = (): void => {
    this.scheduled = false;
    const packets = this.pending;
    if (packets.length === 0) return;
    this.pending = [];
    if (!this.stream.writable) return;
    let small: Buffer[] = [];
    let ok = true;
    const flushSmall = () => {
      if (small.length === 0) return;
      ok = this.stream.write(small.length === 1 ? small[0] : Buffer.concat(small)) && ok;
      small = [];
    };
    for (const p of packets) {
      if (p.length < COALESCE_BELOW) {
        small.push(p);
        continue;
      }
      flushSmall();
      ok = this.stream.write(p) && ok;
    }
    flushSmall();
    if (!ok) this.onBlocked();
  };
}
