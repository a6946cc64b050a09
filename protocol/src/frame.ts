// Framing of the agent link: 4-byte big-endian length + msgpack payload, on any byte stream.
// Owns encoding/decoding and the limits a frame is held to before it is decoded (size, then value budget); knows
// nothing of message meaning (the peer says which limits apply when).
import { Packr } from 'msgpackr';
import { checkBudget, type ValueBudget } from './budget.js';
import { FrameTooLargeError, ProtocolError } from './errors.js';

export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
const HEADER = 4;

/** What one incoming frame may hold: checked on its length header, then on its msgpack headers, then decoded. */
export interface FrameLimits {
  maxBytes: number;
  /** Absent: decoded without a budget (encoding helpers, tests). */
  budget?: ValueBudget;
}

// useRecords: false — msgpackr's record structures are per-connection state that breaks on reconnect and across
// versions. mapsAsObjects keeps decoded maps plain objects for validation.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** Encodes one message as a complete frame (header + payload) in a single buffer. */
export function encodeFrame(message: unknown, maxFrame = DEFAULT_MAX_FRAME): Buffer {
  const payload = packr.pack(message);
  if (payload.length > maxFrame) throw new FrameTooLargeError(payload.length, maxFrame);
  const frame = Buffer.allocUnsafe(HEADER + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  payload.copy(frame, HEADER);
  return frame;
}

/**
 * Decodes one msgpack payload, after checking it against `budget` when given; every failure (including stack
 * exhaustion on deep nesting) becomes a ProtocolError.
 */
export function decodePayload(payload: Buffer, budget?: ValueBudget): unknown {
  if (budget) checkBudget(payload, budget);
  try {
    return packr.unpack(payload);
  } catch (err) {
    const reason = err instanceof RangeError ? 'nesting too deep' : (err as Error).message;
    throw new ProtocolError(`undecodable msgpack payload (${payload.length} bytes): ${reason}`);
  }
}

/** What `FrameDecoder.next` returns while no complete frame is buffered. */
export const INCOMPLETE: unique symbol = Symbol('incomplete frame');

/**
 * Reassembles frames from arbitrary chunks. `add` buffers a chunk and `next` decodes one complete frame at a time,
 * so the limits may change between two frames of one chunk (the peer raises them once hello is accepted). Both throw
 * a ProtocolError on the first bad frame, after which the decoder must be discarded (the stream is out of sync).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1; // payload length of the frame being read, -1 while reading a header
  limits: FrameLimits;

  constructor(limits: FrameLimits | number = DEFAULT_MAX_FRAME) {
    this.limits = typeof limits === 'number' ? { maxBytes: limits } : limits;
  }

  add(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  next(): unknown {
    if (this.need < 0) {
      if (this.buffered < HEADER) return INCOMPLETE;
      const length = this.take(HEADER).readUInt32BE(0);
      // Checked before a single payload byte is kept, so a hostile length cannot make us allocate.
      if (length > this.limits.maxBytes) throw new FrameTooLargeError(length, this.limits.maxBytes);
      this.need = length;
    }
    if (this.buffered < this.need) return INCOMPLETE;
    const payload = this.take(this.need);
    this.need = -1;
    return decodePayload(payload, this.limits.budget);
  }

  /** `add`, then every complete frame decoded under the current limits. */
  push(chunk: Buffer): unknown[] {
    this.add(chunk);
    const out: unknown[] = [];
    for (let m = this.next(); m !== INCOMPLETE; m = this.next()) out.push(m);
    return out;
  }

  /** Bytes held for an incomplete frame (for tests and diagnostics). */
  get pending(): number {
    return this.buffered;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length === n) {
      this.chunks.shift();
      this.buffered -= n;
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      const used = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, used);
      filled += used;
      if (used === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(used);
    }
    this.buffered -= n;
    return out;
  }
}
