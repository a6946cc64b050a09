// The pooled random fill: small requests come from the pool (fresh bytes each time, within the asked range), large
// or malformed ones behave exactly as node:crypto's own; and in a host agent process ssh2's packet padding really
// goes through the pool (the import order the entry points rely on).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { randomPoolStats } from './random-pool.js';

describe('pooled randomFillSync', () => {
  it('fills exactly the asked range with bytes never handed out before', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const buf = Buffer.alloc(40);
      const before = randomPoolStats.pooled;
      crypto.randomFillSync(buf, 8, 16);
      expect(randomPoolStats.pooled).toBe(before + 1);
      expect(buf.subarray(0, 8).equals(Buffer.alloc(8))).toBe(true);
      expect(buf.subarray(24).equals(Buffer.alloc(16))).toBe(true);
      const hex = buf.subarray(8, 24).toString('hex');
      expect(seen.has(hex)).toBe(false);
      seen.add(hex);
    }
    expect(randomPoolStats.refills).toBeGreaterThan(0);
  });

  it('leaves large and invalid requests to node:crypto', () => {
    const before = randomPoolStats.pooled;
    const big = crypto.randomFillSync(Buffer.alloc(4096));
    expect(big.equals(Buffer.alloc(4096))).toBe(false);
    expect(crypto.randomFillSync(new Uint32Array(4))).toHaveLength(4);
    expect(() => crypto.randomFillSync(Buffer.alloc(8), 4, 8)).toThrow(RangeError);
    expect(() => crypto.randomFillSync(Buffer.alloc(8), -1)).toThrow(RangeError);
    expect(() => crypto.randomFillSync(Buffer.alloc(8), 0, null as unknown as number)).toThrow(TypeError);
    expect(randomPoolStats.pooled).toBe(before);
  });

  it("is what ssh2's packet padding uses in a host agent process", () => {
    const entry = fileURLToPath(new URL('../../dist/agent/index.js', import.meta.url));
    const pool = fileURLToPath(new URL('../../dist/ssh/random-pool.js', import.meta.url));
    const script = `
      await import(${JSON.stringify(entry)});
      const { randomPoolStats } = await import(${JSON.stringify(pool)});
      const { createRequire } = await import('node:module');
      const require = createRequire(${JSON.stringify(entry)});
      const { createCipher, CIPHER_INFO } = require('ssh2/lib/protocol/crypto.js');
      const info = CIPHER_INFO['aes128-gcm@openssh.com'];
      const cipher = createCipher({ outbound: { onWrite() {}, cipherInfo: info, cipherKey: Buffer.alloc(info.keyLen),
        cipherIV: Buffer.alloc(info.ivLen), seqno: 0, macInfo: {}, macKey: null } });
      const before = randomPoolStats.pooled;
      cipher.allocPacket(100);
      console.log(randomPoolStats.pooled - before);`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe('1');
  });
});
