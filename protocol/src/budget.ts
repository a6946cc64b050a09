// A cheap walk over the headers of a msgpack payload that refuses it before msgpackr builds a single object.
// Decoding is where a hostile frame costs memory and CPU: a 16 MiB frame of 165,000 twelve-key maps whose keys come
// in random orders took 6–10 s and 350–560 MB to decode (every new key order is a new V8 hidden class), against
// 0.25 s for a legitimate 131,072-listener snapshot of the same size, whose maps all share one key order. So a payload
// is held to what the largest legitimate message needs: values in total, entries per map, distinct key orders
// ("shapes"), nesting depth, map keys that are short strings, and no msgpack extensions (msgpackr's build Sets,
// Errors, RegExps, BigInts and typed arrays; the protocol uses none). Owns only this count: truncated or otherwise
// malformed payloads are left to the decoder to report.
import { randomInt } from 'node:crypto';
import { ProtocolError } from './errors.js';

export interface ValueBudget {
  /** msgpack values (scalars, strings, containers and their members) in one payload. */
  maxValues: number;
  /** Entries (key/value pairs) in any one map. */
  maxMapEntries: number;
  /** Distinct key sequences among the payload's maps. */
  maxShapes: number;
  /** Containers open at once. */
  maxDepth: number;
}

/** The payload was refused by its budget before decoding. */
export class BudgetExceededError extends ProtocolError {
  override name = 'BudgetExceededError';
}

const EXT_UNDEFINED = 0; // msgpackr writes `undefined` (an absent optional field) as fixext1 of type 0

// Shapes are told apart by two FNV-1a hashes of the key bytes, 32 bits each, started from values drawn per process:
// a peer cannot aim different key orders at one hash without knowing them.
const SEED1 = randomInt(2 ** 32) | 0;
const SEED2 = randomInt(2 ** 32) | 0;
const FNV_PRIME = 0x0100_0193;
const MIX = 0x85eb_ca6b;

/** Throws BudgetExceededError when `payload` holds more than the budget allows; returns otherwise. */
export function checkBudget(payload: Uint8Array, budget: ValueBudget): void {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const end = payload.byteLength;
  const { maxValues, maxMapEntries, maxShapes, maxDepth } = budget;
  // One entry per open container: members left to read, and for maps the running hashes of their keys. Plain
  // locals and typed arrays (no closures over them) keep this loop, run once per value of every frame, fast.
  const left = new Int32Array(maxDepth); // members are checked against maxValues before they are stored
  const isMap = new Uint8Array(maxDepth);
  const h1 = new Int32Array(maxDepth);
  const h2 = new Int32Array(maxDepth);
  const shapes = new Set<number>();
  let depth = 0;
  let values = 1;
  let pos = 0;
  for (;;) {
    if (pos >= end) return; // truncated: the decoder says so
    const b = payload[pos];
    if (depth > 0 && isMap[depth - 1] === 1 && (left[depth - 1] & 1) === 0) {
      // A key: msgpackr makes it a property name, so only short strings, and they make up the map's shape.
      if (b < 0xa0 || b > 0xbf) refuse(end, `a map key of msgpack type 0x${b.toString(16)} (keys are short strings)`);
      const stop = Math.min(end, pos + 1 + (b & 0x1f));
      let a1 = h1[depth - 1];
      let a2 = h2[depth - 1];
      for (let i = pos; i < stop; i++) {
        a1 = Math.imul(a1 ^ payload[i], FNV_PRIME);
        a2 = Math.imul(a2 ^ payload[i], MIX);
        a2 ^= a2 >>> 13;
      }
      h1[depth - 1] = a1;
      h2[depth - 1] = a2;
    }
    pos++;
    let members = -1; // -1: a scalar or string, nothing nested
    let map = false;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
      // fixint, nil, bool: nothing more to read
    } else if (b <= 0x8f) {
      members = (b & 0x0f) * 2;
      map = true;
    } else if (b <= 0x9f) {
      members = b & 0x0f;
    } else if (b <= 0xbf) {
      pos += b & 0x1f;
    } else {
      if (b === 0xc1) return; // never used: the decoder refuses it
      if (pos + LENGTH_BYTES[b - 0xc4] > end) return; // a length field cut short: truncated
      switch (b) {
        case 0xcc: // uint8, int8
        case 0xd0:
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          pos += 2;
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          pos += 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          pos += 8;
          break;
        case 0xc4: // bin8, str8
        case 0xd9:
          pos += 1 + payload[pos];
          break;
        case 0xc5:
        case 0xda:
          pos += 2 + view.getUint16(pos);
          break;
        case 0xc6:
        case 0xdb:
          pos += 4 + view.getUint32(pos);
          break;
        case 0xd4:
          if (payload[pos] !== EXT_UNDEFINED) refuse(end, `msgpack extension type ${payload[pos]}`);
          pos += 2;
          break;
        case 0xdc:
          members = view.getUint16(pos);
          pos += 2;
          break;
        case 0xdd:
          members = view.getUint32(pos);
          pos += 4;
          break;
        case 0xde:
          members = view.getUint16(pos) * 2;
          map = true;
          pos += 2;
          break;
        case 0xdf:
          members = view.getUint32(pos) * 2;
          map = true;
          pos += 4;
          break;
        default:
          refuse(end, `msgpack extension (header 0x${b.toString(16)})`);
      }
    }
    if (members > 0) {
      if (map && members / 2 > maxMapEntries) refuse(end, `a map of ${members / 2} entries (at most ${maxMapEntries})`);
      values += members;
      if (values > maxValues) refuse(end, `more than ${maxValues} values (at least ${values})`);
      if (depth === maxDepth) refuse(end, `nesting deeper than ${maxDepth}`);
      left[depth] = members;
      isMap[depth] = map ? 1 : 0;
      h1[depth] = SEED1;
      h2[depth] = SEED2;
      depth++;
      continue;
    }
    // A value is complete: it completes its container when it was the last member, and so on upwards.
    for (;;) {
      if (depth === 0) return;
      if (--left[depth - 1] > 0) break;
      depth--;
      if (isMap[depth] === 1) {
        shapes.add((h1[depth] >>> 0) * 2 ** 21 + (h2[depth] >>> 11));
        if (shapes.size > maxShapes) refuse(end, `maps with more than ${maxShapes} different key orders`);
      }
    }
  }
}

/** Bytes of the length (or extension type) field after headers 0xc4–0xdf, for the truncation check. */
const LENGTH_BYTES = [1, 2, 4, 1, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 4, 2, 4, 2, 4];

function refuse(bytes: number, what: string): never {
  throw new BudgetExceededError(`msgpack payload of ${bytes} bytes refused before decoding: ${what}`);
}
