// Framing of the agent link: 4-byte big-endian length + msgpack payload, on any byte stream.
// Owns encoding/decoding and the frame size limit; knows nothing of message meaning.
import { Packr } from 'msgpackr';
import { FrameTooLargeError, ProtocolError } from './errors.js';

export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
const HEADER = 4;

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

/** Decodes one msgpack payload; every failure (including stack exhaustion on deep nesting) becomes a ProtocolError. */
export function decodePayload(payload: Buffer): unknown {
  try {
    return packr.unpack(payload);
  } catch (err) {
    const reason = err instanceof RangeError ? 'nesting too deep' : (err as Error).message;
    throw new ProtocolError(`undecodable msgpack payload (${payload.length} bytes): ${reason}`);
  }
}

/**
 * Reassembles frames from arbitrary chunks. `push` returns the complete payloads decoded so far; it throws a
 * ProtocolError on the first bad frame, after which the decoder must be discarded (the stream is out of sync).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1; // payload length of the frame being read, -1 while reading a header

  constructor(private readonly maxFrame = DEFAULT_MAX_FRAME) {}

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < HEADER) break;
        const length = this.take(HEADER).readUInt32BE(0);
        // Checked before a single payload byte is kept, so a hostile length cannot make us allocate.
        if (length > this.maxFrame) throw new FrameTooLargeError(length, this.maxFrame);
        this.need = length;
      }
      if (this.buffered < this.need) break;
      const payload = this.take(this.need);
      this.need = -1;
      out.push(decodePayload(payload));
    }
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
