// SFTP wire encoding: splitting the input stream into packets, reading fields out of a packet, and building
// reply packets. Owns byte layout only; knows nothing about files or request semantics.
import { FXP, type StatusCode } from './constants.js';

/** A packet whose fields run past its end or violate the wire format. */
export class MalformedPacketError extends Error {
  override name = 'MalformedPacketError';
}

/** A length prefix that no SFTP peer may send; the stream cannot be resynchronised after it. */
export class FrameLengthError extends Error {
  override name = 'FrameLengthError';
}

/**
 * Splits a byte stream into packet bodies (type byte onwards). A packet that arrives whole inside one chunk is
 * returned as a view of that chunk; a packet split across chunks is copied once into a buffer of its exact size.
 */
export class SftpPacketSplitter {
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;

  constructor(private readonly maxLength: number) {}

  /** Returns the packets completed by `chunk`. Throws FrameLengthError on an absurd length. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.body === null) {
        if (this.headerFill === 0 && chunk.length - off >= 4) {
          const len = this.checkLength(chunk.readUInt32BE(off));
          off += 4;
          if (chunk.length - off >= len) {
            out.push(chunk.subarray(off, off + len));
            off += len;
            continue;
          }
          this.body = Buffer.allocUnsafe(len);
          this.bodyFill = 0;
        } else {
          const n = Math.min(4 - this.headerFill, chunk.length - off);
          chunk.copy(this.header, this.headerFill, off, off + n);
          this.headerFill += n;
          off += n;
          if (this.headerFill < 4) break;
          this.headerFill = 0;
          this.body = Buffer.allocUnsafe(this.checkLength(this.header.readUInt32BE(0)));
          this.bodyFill = 0;
        }
      }
      const n = Math.min(this.body.length - this.bodyFill, chunk.length - off);
      chunk.copy(this.body, this.bodyFill, off, off + n);
      this.bodyFill += n;
      off += n;
      if (this.bodyFill === this.body.length) {
        out.push(this.body);
        this.body = null;
      }
    }
    return out;
  }

  private checkLength(len: number): number {
    if (len < 1 || len > this.maxLength) {
      throw new FrameLengthError(`packet length ${len} outside 1..${this.maxLength}`);
    }
    return len;
  }
}

/** Sequential field reader over one packet body; every read is bounds-checked. */
export class PacketReader {
  private off = 0;

  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.off;
  }

  u8(): number {
    this.need(1, 'byte');
    return this.buf[this.off++];
  }

  u32(): number {
    this.need(4, 'uint32');
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }

  /** uint64 as a number; values above 2^53 are refused rather than silently rounded. */
  u64(): number {
    this.need(8, 'uint64');
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MalformedPacketError(`uint64 ${v} too large`);
    return Number(v);
  }

  bytes(): Buffer {
    const len = this.u32();
    this.need(len, `string of ${len} bytes`);
    const v = this.buf.subarray(this.off, this.off + len);
    this.off += len;
    return v;
  }

  string(): string {
    return this.bytes().toString('utf8');
  }

  /** A path as a byte string (see paths.ts): every byte kept, whether or not the name is UTF-8. */
  path(): string {
    return this.bytes().toString('latin1');
  }

  private need(n: number, what: string): void {
    if (this.off + n > this.buf.length) {
      throw new MalformedPacketError(`truncated packet: ${what} at offset ${this.off} of ${this.buf.length}`);
    }
  }
}

/** Builds one outgoing packet (length prefix included) in a growable buffer. */
export class PacketWriter {
  private buf: Buffer;
  private off = 4;

  constructor(type: number, sizeHint = 64) {
    this.buf = Buffer.allocUnsafe(Math.max(16, sizeHint + 5));
    this.u8(type);
  }

  u8(v: number): this {
    this.reserve(1);
    this.buf[this.off++] = v;
    return this;
  }

  u32(v: number): this {
    this.reserve(4);
    this.buf.writeUInt32BE(v >>> 0, this.off);
    this.off += 4;
    return this;
  }

  u64(v: number | bigint): this {
    this.reserve(8);
    this.buf.writeBigUInt64BE(BigInt(v), this.off);
    this.off += 8;
    return this;
  }

  bytes(v: Buffer): this {
    this.u32(v.length);
    this.reserve(v.length);
    v.copy(this.buf, this.off);
    this.off += v.length;
    return this;
  }

  string(v: string): this {
    const len = Buffer.byteLength(v, 'utf8');
    this.u32(len);
    this.reserve(len);
    this.off += this.buf.write(v, this.off, 'utf8');
    return this;
  }

  /** A path given as a byte string (see paths.ts), written back byte for byte. */
  path(v: string): this {
    this.u32(v.length);
    this.reserve(v.length);
    this.off += this.buf.write(v, this.off, 'latin1');
    return this;
  }

  /** The finished packet, length prefix filled in. */
  finish(): Buffer {
    this.buf.writeUInt32BE(this.off - 4, 0);
    return this.buf.subarray(0, this.off);
  }

  private reserve(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }
}

/** An SSH_FXP_STATUS reply to request `id` (no language tag). */
export function statusPacket(id: number, code: StatusCode, message: string): Buffer {
  return new PacketWriter(FXP.STATUS, 16 + message.length).u32(id).u32(code).string(message).string('').finish();
}
