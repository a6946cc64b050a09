import { describe, expect, it } from 'vitest';
import { FrameTooLargeError, ProtocolError } from './errors.js';
import { decodePayload, encodeFrame, FrameDecoder } from './frame.js';

const sample = { t: 'evt', e: 'ports.delta', d: { seq: 7, added: [], removed: [] }, bin: Buffer.from([1, 2, 3]) };

describe('frame codec', () => {
  it('round-trips a message including binary data', () => {
    const frame = encodeFrame(sample);
    expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
    const [m] = new FrameDecoder().push(frame) as [typeof sample];
    expect(m.d).toEqual(sample.d);
    expect(Buffer.from(m.bin)).toEqual(sample.bin);
  });

  it('reassembles a frame split at every byte boundary', () => {
    const frame = encodeFrame(sample);
    for (let cut = 1; cut < frame.length; cut++) {
      const d = new FrameDecoder();
      expect(d.push(frame.subarray(0, cut))).toEqual([]);
      const out = d.push(frame.subarray(cut));
      expect(out).toHaveLength(1);
      expect(d.pending).toBe(0);
    }
  });

  it('reassembles a frame delivered one byte at a time', () => {
    const frame = encodeFrame(sample);
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (const b of frame) out.push(...d.push(Buffer.from([b])));
    expect(out).toHaveLength(1);
  });

  it('splits concatenated frames', () => {
    const frames = Buffer.concat([encodeFrame({ a: 1 }), encodeFrame({ a: 2 }), encodeFrame({ a: 3 })]);
    expect(new FrameDecoder().push(frames)).toEqual([{ a: 1 }, { a: 2 }, { a: 3 }]);
  });

  it('rejects a frame over the maximum from its header alone, before buffering the payload', () => {
    const d = new FrameDecoder(1024);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(0xffff_fff0, 0);
    expect(() => d.push(header)).toThrow(FrameTooLargeError);
    expect(() => new FrameDecoder(1024).push(header)).toThrow(/exceeds the maximum of 1024 bytes/);
  });

  it('refuses to encode a message larger than the maximum', () => {
    expect(() => encodeFrame({ big: Buffer.alloc(2048) }, 1024)).toThrow(FrameTooLargeError);
  });

  it('turns truncated msgpack into a ProtocolError', () => {
    const payload = encodeFrame({ hello: 'world', n: [1, 2, 3] }).subarray(4);
    expect(() => decodePayload(payload.subarray(0, payload.length - 3))).toThrow(ProtocolError);
  });

  it('turns 200,000-deep nesting into a ProtocolError instead of a crash', () => {
    const depth = 200_000;
    const payload = Buffer.alloc(depth + 1, 0x91); // fixarray of 1 element, nested
    payload[depth] = 0xc0; // nil at the bottom
    const header = Buffer.alloc(4);
    header.writeUInt32BE(payload.length, 0);
    expect(() => new FrameDecoder().push(Buffer.concat([header, payload]))).toThrow(/nesting too deep|undecodable/);
  });
});
