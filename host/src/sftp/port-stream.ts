// A byte stream across a thread boundary: one Duplex on each end of a MessagePort (or a worker's port), so code
// written against a Duplex (the SFTP server) can run on a worker thread while the SSH channel stays on the main one.
// Owns the framing of its own messages on the port and the flow control between the two ends; any other message on
// the port goes to the `onMessage` callback, in order with the stream's data.
//
// Flow control is by credit: a writer may have at most WINDOW bytes that the other end has not yet handed to its
// reader; past that, its write callback waits for an ack. The reading end acks once its consumer has taken the bytes
// (immediately while push() returns true, else at the next _read()), in batches of at least ACK_BATCH bytes.
import { Duplex } from 'node:stream';

/** What a MessagePort and a worker's parentPort share. */
export interface PortLike {
  postMessage(value: unknown, transferList?: readonly ArrayBuffer[]): void;
  on(event: 'message', listener: (value: unknown) => void): unknown;
  off(event: 'message', listener: (value: unknown) => void): unknown;
}

/** Bytes a writer may have outstanding, unread by the other end. */
const WINDOW = 1024 * 1024;
/** Acks carry at least this much, so small chunks do not cost one message each way. */
const ACK_BATCH = 64 * 1024;

type StreamMessage =
  | { stream: 'data'; bytes: ArrayBuffer }
  | { stream: 'ack'; n: number }
  | { stream: 'end' }
  | { stream: 'destroy'; reason: string };

function isStreamMessage(m: unknown): m is StreamMessage {
  return typeof m === 'object' && m !== null && typeof (m as { stream?: unknown }).stream === 'string';
}

export class PortStream extends Duplex {
  /** Bytes written and not yet acked by the other end. */
  private outstanding = 0;
  /** A write waiting for acks: its callback. */
  private blocked: (() => void) | null = null;
  /** Bytes pushed to our reader since the last ack we sent. */
  private unacked = 0;
  /** The other end destroyed its stream: nothing more to tell it. */
  private remoteGone = false;
  private readonly listener = (m: unknown) => this.onPortMessage(m);

  constructor(
    private readonly port: PortLike,
    private readonly onMessage: (m: unknown) => void = () => {},
  ) {
    // Not destroyed when both sides are done: a destroy is passed to the other end, which would drop replies its
    // reader has not taken yet. Each end is let go with detach().
    super({ allowHalfOpen: true, autoDestroy: false });
    port.on('message', this.listener);
  }

  /** Sends a message that is not stream data, in order with the data written before it. */
  post(message: object): void {
    this.port.postMessage(message);
  }

  /** Stops listening on the port (the port itself belongs to the caller). */
  detach(): void {
    this.port.off('message', this.listener);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    // A copy the size of the chunk, transferred: a Buffer is often a view into a larger pooled ArrayBuffer, which
    // structured clone would copy whole.
    const bytes = new ArrayBuffer(chunk.length);
    new Uint8Array(bytes).set(chunk);
    this.port.postMessage({ stream: 'data', bytes } satisfies StreamMessage, [bytes]);
    this.outstanding += chunk.length;
    if (this.outstanding <= WINDOW) cb();
    else this.blocked = () => cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.port.postMessage({ stream: 'end' } satisfies StreamMessage);
    cb();
  }

  override _read(): void {
    this.sendAck(0);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.remoteGone) {
      this.port.postMessage({ stream: 'destroy', reason: err?.message ?? 'destroyed' } satisfies StreamMessage);
    }
    this.detach();
    cb(err);
  }

  private onPortMessage(m: unknown): void {
    if (!isStreamMessage(m)) {
      this.onMessage(m);
      return;
    }
    switch (m.stream) {
      case 'data': {
        if (this.destroyed || this.readableEnded) return;
        const n = m.bytes.byteLength;
        this.unacked += n;
        if (this.push(Buffer.from(m.bytes))) this.sendAck(ACK_BATCH);
        return;
      }
      case 'ack': {
        this.outstanding -= m.n;
        const blocked = this.blocked;
        if (blocked && this.outstanding <= WINDOW) {
          this.blocked = null;
          blocked();
        }
        return;
      }
      case 'end':
        if (!this.destroyed && !this.readableEnded) this.push(null);
        return;
      case 'destroy':
        this.remoteGone = true;
        this.destroy();
        return;
    }
  }

  private sendAck(atLeast: number): void {
    if (this.unacked === 0 || this.unacked < atLeast) return;
    this.port.postMessage({ stream: 'ack', n: this.unacked } satisfies StreamMessage);
    this.unacked = 0;
  }
}
