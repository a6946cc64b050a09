// The buffer collector's policy with an injected GC and memory reading (fake timers drive the checks), and the real
// thing in a child node with --expose-gc: dead Buffers are collected before V8's own trigger would.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startBufferCollector } from './buffer-gc.js';

const MiB = 1024 * 1024;
/** The child runs plain node (no TypeScript), so it loads the built module (`npx tsc -b`). */
const BUILT = new URL('../../dist/agent/buffer-gc.js', import.meta.url);
const built = existsSync(fileURLToPath(BUILT));
if (!built && process.env.CI === 'true')
  throw new Error(`${fileURLToPath(BUILT)} is missing: run \`npx tsc -b\` first`);

describe('buffer collector', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('collects once garbage passes the limit above the live level, and re-bases on what survives', () => {
    vi.useFakeTimers();
    let memory = 4 * MiB;
    let survivors = 4 * MiB;
    const collect = vi.fn(() => {
      memory = survivors;
    });
    const c = startBufferCollector({ limitBytes: 16 * MiB, intervalMs: 100, collect, arrayBuffers: () => memory });
    expect(c).not.toBeNull();

    vi.advanceTimersByTime(100); // first reading: 4 MiB live
    memory = 19 * MiB; // 15 MiB above the live 4 MiB: not yet
    vi.advanceTimersByTime(100);
    expect(collect).not.toHaveBeenCalled();

    memory = 21 * MiB;
    survivors = 10 * MiB; // e.g. four streams' windows are live
    vi.advanceTimersByTime(100);
    expect(collect).toHaveBeenCalledTimes(1);
    expect(c?.collections).toBe(1);

    vi.advanceTimersByTime(100); // reads the 10 MiB that survived
    memory = 24 * MiB; // 14 MiB above the new live level
    vi.advanceTimersByTime(100);
    expect(collect).toHaveBeenCalledTimes(1);

    memory = 27 * MiB;
    vi.advanceTimersByTime(100);
    expect(collect).toHaveBeenCalledTimes(2);

    c?.stop();
    memory = 100 * MiB;
    vi.advanceTimersByTime(1000);
    expect(collect).toHaveBeenCalledTimes(2);
  });

  it('does nothing without a GC function (no --expose-gc)', () => {
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    expect(startBufferCollector()).toBeNull();
  });

  it.skipIf(!built)('keeps the dead Buffers of a real process well below what V8 alone lets pile up', () => {
    // 256 MiB of short-lived 64 KiB Buffers, like socket reads; the peak of ArrayBuffer memory is reported.
    const script = `
      const { startBufferCollector } = await import(${JSON.stringify(BUILT.href)});
      const c = process.env.COLLECT ? startBufferCollector({ intervalMs: 5 }) : null;
      let peak = 0;
      let keep = [];
      for (let i = 0; i < 4096; i++) {
        keep.push(Buffer.allocUnsafe(64 * 1024).fill(i));
        if (keep.length > 8) keep = keep.slice(1);
        if (i % 16 === 0) await new Promise((r) => setTimeout(r, 1));
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
      }
      process.stdout.write(JSON.stringify({ peak, collections: c?.collections ?? 0 }));
    `;
    const run = (collect: boolean) =>
      JSON.parse(
        execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
          env: { ...process.env, COLLECT: collect ? '1' : '' },
          encoding: 'utf8',
        }),
      ) as { peak: number; collections: number };
    const withCollector = run(true);
    const without = run(false);
    expect(withCollector.collections).toBeGreaterThan(0);
    expect(withCollector.peak).toBeLessThan(without.peak - 8 * MiB);
  });
});
