import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { BudgetExceededError, checkBudget } from './budget.js';
import { FRAME_LIMITS, LIMITS, type Listener } from './messages.js';

const budget = FRAME_LIMITS.afterHello.budget;
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
const pack = (m: unknown) => packr.pack(m);
const listener = (i: number): Listener => ({
  proto: 'tcp',
  family: 4,
  ip: `10.0.${(i >> 8) & 255}.${i & 255}`,
  port: 1024 + (i % 60_000),
  pid: 1000 + i,
  command: `node server-${i}.js`,
});
const key = (i: number) => i.toString(36).padStart(6, 'a');

/** A msgpack array of `maps` maps of `keys` entries, with keys from `keyFor(map, entry)` and nil values. */
function mapsPayload(maps: number, keys: number, keyFor: (map: number, entry: number) => string): Buffer {
  const parts = [Buffer.from([0xdd, 0, 0, 0, 0])];
  parts[0].writeUInt32BE(maps, 1);
  for (let m = 0; m < maps; m++) {
    const map = Buffer.alloc(1 + keys * 8);
    map[0] = 0x80 | keys;
    for (let e = 0; e < keys; e++) {
      map[1 + e * 8] = 0xa6;
      map.write(keyFor(m, e), 2 + e * 8, 'latin1');
      map[8 + e * 8] = 0xc0;
    }
    parts.push(map);
  }
  return Buffer.concat(parts);
}

describe('value budget', () => {
  it('passes the largest legitimate messages: a full snapshot and a full delta', () => {
    const full = Array.from({ length: LIMITS.listenersPerMessage }, (_, i) => listener(i));
    expect(() =>
      checkBudget(pack({ t: 'res', id: 1, ok: true, r: { seq: 1, listeners: full } }), budget),
    ).not.toThrow();
    const delta = { t: 'evt', e: 'ports.delta', d: { seq: 2, added: full, removed: full } };
    expect(() => checkBudget(pack(delta), budget)).not.toThrow();
    const info = { t: 'res', id: 1, ok: false, r: null, e: { code: 'x', message: 'y' }, extra: undefined };
    expect(() => checkBudget(pack(info), budget)).not.toThrow();
  });

  it('refuses one map of 2 million keys (seconds and a gigabyte to decode) from its header', () => {
    const n = 2_000_000;
    const payload = Buffer.alloc(5 + n * 8, 0xc0);
    payload[0] = 0xdf;
    payload.writeUInt32BE(n, 1);
    expect(() => checkBudget(payload, budget)).toThrow(
      /msgpack payload of 16000005 bytes refused before decoding: a map of 2000000 entries \(at most 32\)/,
    );
  });

  it('refuses many small maps whose keys come in different orders (each a new hidden class to decode)', () => {
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed >> 8;
    };
    const random = mapsPayload(1000, 6, () => key(rand() % 1000));
    expect(() => checkBudget(random, budget)).toThrow(/maps with more than 256 different key orders/);
    const distinct = mapsPayload(1000, 6, (m, e) => key(m * 6 + e));
    expect(() => checkBudget(distinct, budget)).toThrow(BudgetExceededError);
    // The same maps with one key order, as real messages have, pass.
    expect(() =>
      checkBudget(
        mapsPayload(1000, 6, (_, e) => key(e)),
        budget,
      ),
    ).not.toThrow();
  });

  it('refuses more values than the largest message has, from the container headers', () => {
    const payload = Buffer.alloc(5 + 10, 0x01);
    payload[0] = 0xdd;
    payload.writeUInt32BE(0xffff_ffff, 1);
    expect(() => checkBudget(payload, budget)).toThrow(/more than 3408896 values \(at least 4294967296\)/);
  });

  it('refuses extensions, keys that are not short strings, and deep nesting', () => {
    expect(() => checkBudget(Buffer.from([0xc7, 0x01, 0x42, 0x01]), budget)).toThrow(/extension \(header 0xc7\)/);
    expect(() => checkBudget(Buffer.from([0xd4, 0x73, 0x90]), budget)).toThrow(/extension type 115/);
    expect(() => checkBudget(Buffer.from([0x81, 0x01, 0xc0]), budget)).toThrow(/map key of msgpack type 0x1/);
    const deep = Buffer.alloc(200_001, 0x91);
    deep[200_000] = 0xc0;
    expect(() => checkBudget(deep, budget)).toThrow(/nesting deeper than 32/);
  });

  it('leaves truncated and malformed payloads to the decoder', () => {
    for (const bytes of [[0xdd, 0, 0], [0x92, 0x01], [0xc1], [0xdb, 0, 0, 0, 9, 0x41], [0x81, 0xa1]]) {
      expect(() => checkBudget(Buffer.from(bytes), budget)).not.toThrow();
    }
  });
});
