// The marker-touch filter for a session served by OpenSSH's sftp-server: sits between the guest's byte stream and
// the server's stdio and answers the guest applier's marker touches (SETSTAT, FSETSTAT or lsetstat@openssh.com
// setting exactly MARKER_TOUCH's times, see attrs.ts isMarkerTouch) itself, with SSH_FXP_STATUS OK, so they never
// reach sftp-server: it would set those times on the host file (through a symlink, on a file outside the export)
// or, on a read-only export, refuse them, and the guest would see no event. Every other byte passes unchanged and
// in order. Owns packet boundaries of both directions and the injection of its replies; nothing else.
//
// Requests are not decoded whole: only a packet whose type can be a marker touch is collected (they are small);
// every other one, WRITE data included, is passed on as views of the chunks it arrived in. Replies are only
// counted, so a generated one is slipped in where a server packet ends and never inside one. With a change tap
// (change-tap.ts), the requests that change paths are collected too, and a WRITE's head, and the heads of replies
// are copied to it while it waits for them; the bytes still pass unchanged and in order.
import { Transform, type TransformCallback } from 'node:stream';
import { isMarkerTouch, readAttrs } from './attrs.js';
import { type ChangeTap, HEAD_BYTES, TAPPED_REQUESTS } from './change-tap.js';
import { EXT, FX, FXP, MAX_PACKET_LENGTH } from './constants.js';
import { PacketReader, statusPacket } from './packet.js';

interface MarkerFilterLogger {
  warn(obj: object, msg: string): void;
}

interface MarkerFilter {
  /** guest → sftp-server: the channel is piped into it, it into the server's stdin. */
  readonly requests: Transform;
  /** sftp-server → guest: the server's stdout is piped into it, it into the channel. */
  readonly replies: Transform;
  /** Marker touches answered so far. */
  readonly answered: () => number;
}

/** Length prefix and type byte: enough to tell whether a request may be a marker touch. */
const HEADER = 5;

const CANDIDATES: ReadonlySet<number> = new Set([FXP.SETSTAT, FXP.FSETSTAT, FXP.EXTENDED]);
const LSETSTAT = Buffer.from(EXT.LSETSTAT);

/** The request id when `packet` (length prefix included) is a marker touch, else null. Malformed: null. */
export function markerTouchId(packet: Buffer): number | null {
  try {
    const r = new PacketReader(packet.subarray(4));
    const type = r.u8();
    const id = r.u32();
    if (type === FXP.EXTENDED) {
      if (!r.bytes().equals(LSETSTAT)) return null;
      r.bytes();
    } else if (type === FXP.SETSTAT || type === FXP.FSETSTAT) {
      r.bytes(); // path or handle: the answer does not depend on it
    } else return null;
    return isMarkerTouch(readAttrs(r)) ? id : null;
  } catch {
    return null; // sftp-server gets it and answers it as it would
  }
}

/** Counts sftp-server's reply packets and slips generated replies in between them. */
class ReplyStream extends Transform {
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  /** Bytes of the current server packet still to come; 0 with headerFill 0: at a boundary. */
  private left = 0;
  /** The current packet's first bytes, copied for the tap while it waits for replies (HEAD_BYTES at most). */
  private readonly head = Buffer.alloc(HEAD_BYTES);
  private headFill = 0;
  private headWant = 0;

  constructor(readonly tap: ChangeTap | null) {
    super();
  }
  /** The server's first packet (VERSION) is out: no reply may precede it. */
  private started = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private waiting: TransformCallback | null = null;
  /** The server's output has ended: nothing more may be pushed, and a reply now has no session to belong to. */
  private ended = false;

  /** Queues `packet` for the guest: now when the server's output is at a packet boundary, else right after it
   * (and after the server's VERSION). Dropped once the server's output has ended. */
  inject(packet: Buffer): void {
    if (this.ended || this.destroyed) return;
    if (this.atBoundary()) this.push(packet);
    else {
      this.pending.push(packet);
      this.pendingBytes += packet.length;
    }
  }

  /** Calls `cb` once the guest has taken enough of what is queued for it (the request side waits on it). */
  whenRoom(cb: TransformCallback): void {
    if (this.readableLength + this.pendingBytes < this.readableHighWaterMark) cb();
    else this.waiting = cb;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let off = 0;
    let run = 0;
    while (off < chunk.length) {
      if (this.left > 0) {
        const n = Math.min(this.left, chunk.length - off);
        if (this.headFill < this.headWant) this.copyHead(chunk, off, n);
        off += n;
        this.left -= n;
      } else if (this.headerFill === 0 && chunk.length - off >= 4) {
        this.startPacket(chunk.readUInt32BE(off));
        off += 4;
      } else {
        const n = Math.min(4 - this.headerFill, chunk.length - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < 4) break;
        this.headerFill = 0;
        this.startPacket(this.header.readUInt32BE(0));
      }
      if (this.left === 0 && this.headerFill === 0) this.started = true;
      if (this.pending.length > 0 && this.atBoundary()) {
        this.push(chunk.subarray(run, off));
        run = off;
        this.flushPending();
      }
    }
    if (run < chunk.length) this.push(run === 0 ? chunk : chunk.subarray(run));
    cb();
  }

  override _flush(cb: TransformCallback): void {
    // The server is gone; what it left unfinished is sent as it is, and replies waiting for its end follow it.
    this.headerFill = 0;
    this.left = 0;
    this.started = true;
    this.flushPending();
    this.ended = true;
    cb();
  }

  override _read(size: number): void {
    // The guest wants more: Transform's own _read resumes a server chunk held meanwhile, and the request side
    // waiting for room goes on too (as Transform does, unconditionally: this is the only call that says so).
    super._read(size);
    this.release();
  }

  private atBoundary(): boolean {
    return this.started && this.left === 0 && this.headerFill === 0;
  }

  private startPacket(length: number): void {
    this.left = length;
    this.headFill = 0;
    this.headWant = 0;
    if (!this.tap?.waiting) return;
    this.headWant = Math.min(4 + length, HEAD_BYTES);
    this.head.writeUInt32BE(length, 0);
    this.headFill = 4;
    if (this.headFill === this.headWant) this.tap.reply(this.head.subarray(0, this.headWant));
  }

  private copyHead(chunk: Buffer, off: number, n: number): void {
    const take = Math.min(n, this.headWant - this.headFill);
    chunk.copy(this.head, this.headFill, off, off + take);
    this.headFill += take;
    if (this.headFill === this.headWant) this.tap?.reply(this.head.subarray(0, this.headWant));
  }

  private flushPending(): void {
    const packets = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const p of packets) this.push(p);
    if (this.readableLength < this.readableHighWaterMark) this.release();
  }

  private release(): void {
    const cb = this.waiting;
    this.waiting = null;
    cb?.();
  }
}

/** Passes requests through, taking out the marker touches and answering them on `replies`. */
class RequestStream extends Transform {
  private readonly header = Buffer.alloc(HEADER);
  private headerFill = 0;
  /** Bytes of a passed-through packet still to come. */
  private passLeft = 0;
  /** A possible marker touch or a tapped request being collected (length prefix included): whole, or a WRITE's head. */
  private held: Buffer | null = null;
  private heldFill = 0;
  /** Bytes of the held packet that pass after the held part (a WRITE's data); 0 when it is held whole. */
  private heldRest = 0;
  /** After a length sftp-server refuses: the stream cannot be followed any more, so it passes as it is. */
  private raw = false;
  answered = 0;

  private readonly tap: ChangeTap | null;

  constructor(
    private readonly replies: ReplyStream,
    private readonly log: MarkerFilterLogger,
  ) {
    super();
    this.tap = replies.tap;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.raw) {
      this.push(chunk);
      cb();
      return;
    }
    let off = 0;
    let run = 0; // start of the bytes of this chunk that pass and are not pushed yet
    const flushRun = () => {
      if (off > run) this.push(chunk.subarray(run, off));
    };
    while (off < chunk.length) {
      if (this.passLeft > 0) {
        const n = Math.min(this.passLeft, chunk.length - off);
        off += n;
        this.passLeft -= n;
      } else if (this.held) {
        const n = Math.min(this.held.length - this.heldFill, chunk.length - off);
        chunk.copy(this.held, this.heldFill, off, off + n);
        this.heldFill += n;
        off += n;
        run = off;
        if (this.heldFill === this.held.length) this.releaseHeld();
      } else if (this.headerFill === 0 && chunk.length - off >= HEADER) {
        const length = chunk.readUInt32BE(off);
        if (!this.lengthOk(length)) {
          this.push(chunk.subarray(run));
          break;
        }
        const want = this.holdBytes(chunk[off + 4], length);
        if (want === 0) {
          this.passLeft = length - 1;
          off += HEADER;
        } else if (off + want > chunk.length) {
          flushRun();
          this.hold(want, length);
          run = off;
        } else if (want < 4 + length) {
          this.tap?.request(chunk.subarray(off, off + want)); // a WRITE's head: the rest passes
          this.passLeft = length - 1;
          off += HEADER;
        } else {
          // Whole in this chunk: a marker touch is cut out of the run, anything else stays in it.
          const end = off + want;
          const packet = chunk.subarray(off, end);
          if (markerTouchId(packet) !== null) {
            flushRun();
            this.answer(packet);
            run = end;
          } else this.tap?.request(packet);
          off = end;
        }
      } else {
        // A header split across chunks is kept until its type is known.
        if (this.headerFill === 0) flushRun();
        const n = Math.min(HEADER - this.headerFill, chunk.length - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        run = off;
        if (this.headerFill < HEADER) break;
        this.headerFill = 0;
        const length = this.header.readUInt32BE(0);
        if (!this.lengthOk(length)) {
          this.push(Buffer.from(this.header));
          this.push(chunk.subarray(off));
          break;
        }
        const want = this.holdBytes(this.header[4], length);
        if (want > 0) {
          const held = this.hold(want, length);
          this.header.copy(held);
          this.heldFill = HEADER;
          if (this.heldFill === held.length) this.releaseHeld();
        } else {
          this.push(Buffer.from(this.header));
          this.passLeft = length - 1;
        }
      }
    }
    if (!this.raw) flushRun();
    // Answers queued for the guest count against its reading: a guest that stops reading stops being read.
    this.replies.whenRoom(cb);
  }

  override _flush(cb: TransformCallback): void {
    // A packet cut short by the guest's EOF goes to sftp-server as it came (the server drops it), said in the log.
    const partial = this.held ? this.held.subarray(0, this.heldFill) : this.header.subarray(0, this.headerFill);
    if (partial.length > 0) this.push(Buffer.from(partial));
    if (partial.length > 0 || this.passLeft > 0) {
      this.log.warn({ missing: this.passLeft || undefined }, 'sftp: the guest ended the session inside a packet');
    }
    this.held = null;
    this.headerFill = 0;
    this.passLeft = 0;
    cb();
  }

  /** How much of a packet of `type` to hold before passing it: 0, all of it, or a WRITE's head. */
  private holdBytes(type: number, length: number): number {
    if (CANDIDATES.has(type) || (this.tap && TAPPED_REQUESTS.has(type))) return 4 + length;
    return this.tap && type === FXP.WRITE ? Math.min(4 + length, HEAD_BYTES) : 0;
  }

  private hold(want: number, length: number): Buffer {
    this.held = Buffer.allocUnsafe(want);
    this.heldFill = 0;
    this.heldRest = 4 + length - want;
    return this.held;
  }

  /** The held bytes are all there: answered (a marker touch) or passed on, and the tap told. */
  private releaseHeld(): void {
    const packet = this.held as Buffer;
    this.held = null;
    if (this.heldRest > 0) {
      this.tap?.request(packet);
      this.push(packet);
      this.passLeft = this.heldRest;
      this.heldRest = 0;
    } else if (!this.answer(packet)) {
      this.tap?.request(packet);
      this.push(packet);
    }
  }

  /** Answers `packet` when it is a marker touch; false when it is not. */
  private answer(packet: Buffer): boolean {
    const id = markerTouchId(packet);
    if (id === null) return false;
    this.answered++;
    this.replies.inject(statusPacket(id, FX.OK, 'ok'));
    return true;
  }

  /** sftp-server's own bounds (SFTP_MAX_MSG_LENGTH, and a type byte at least); outside them it exits. */
  private lengthOk(length: number): boolean {
    if (length >= 1 && length <= MAX_PACKET_LENGTH) return true;
    this.raw = true;
    this.log.warn(
      { length, max: MAX_PACKET_LENGTH },
      'sftp: the guest sent a packet length sftp-server refuses; passing the rest of the session through unfiltered',
    );
    return false;
  }
}

/** `tap`, when given, hears of the changes the passing requests make (change-tap.ts). */
export function markerFilter(log: MarkerFilterLogger, tap: ChangeTap | null = null): MarkerFilter {
  const replies = new ReplyStream(tap);
  const requests = new RequestStream(replies, log);
  return { requests, replies, answered: () => requests.answered };
}
