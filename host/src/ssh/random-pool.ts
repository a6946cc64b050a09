// Random padding for SSH packets from a pool. ssh2 asks node:crypto's randomFillSync for 4-19 bytes of padding per
// packet, and each call costs a fixed ~4 µs here (a crypto job object and OpenSSL's fork check, a getpid syscall),
// the same as filling 4 KiB. Small requests are served from a 4 KiB pool of the same CSPRNG output, each byte handed
// out once; larger ones go straight through. Installed by importing this module before ssh2 loads (ssh2 binds
// randomFillSync when its crypto module is first evaluated), which the host's entry points do first thing.
import crypto from 'node:crypto';

const POOL_SIZE = 4096;
/** Requests up to this size come from the pool. */
const SMALL = 256;

/** The original, typed loosely: it takes whatever the caller passed and validates it itself. */
const direct = crypto.randomFillSync as (buf: unknown, offset?: number, size?: number) => unknown;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let used = POOL_SIZE;

/** Counts pooled fills (tests check that ssh2 really goes through the pool). */
export const randomPoolStats = { pooled: 0, refills: 0 };

function pooledRandomFillSync(buf: unknown, offset = 0, size?: number): unknown {
  const view = Buffer.isBuffer(buf) ? buf : null;
  const length = size === undefined ? (view ? view.length - offset : Number.NaN) : size;
  const small = view && Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0;
  // Anything unusual (not a Buffer, bad bounds) goes to the original, which validates and throws as documented.
  if (!small || length > SMALL || offset + length > view.length) return direct(buf, offset, size);
  if (used + length > POOL_SIZE) {
    direct(pool);
    used = 0;
    randomPoolStats.refills++;
  }
  pool.copy(view, offset, used, used + length); // `used` only grows until a refill: no byte is handed out twice
  used += length;
  randomPoolStats.pooled++;
  return buf;
}

crypto.randomFillSync = pooledRandomFillSync as typeof crypto.randomFillSync;
