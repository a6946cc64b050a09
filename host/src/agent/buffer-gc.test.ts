// The buffer collector's policy with an injected GC and memory reading (fake timers drive the checks), and the real
// thing in a child node with --expose-gc: dead Buffers are collected (minor GCs first) before V8's own trigger would.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type CollectionKind, startBufferCollector } from './buffer-gc.js';

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

  it('runs a minor GC at half the limit above the live level, a full GC when that leaves it over the limit', () => {
    vi.useFakeTimers();
    let memory = 4 * MiB;
    let youngGarbage = 0;
    let survivors = 4 * MiB;
    const collect = vi.fn((kind: CollectionKind) => {
      memory -= youngGarbage;
      youngGarbage = 0;
      if (kind === 'major') memory = survivors;
    });
    const opts = { limitBytes: 16 * MiB, busyIntervalMs: 100, idleIntervalMs: 100, collect };
    const c = startBufferCollector({ ...opts, arrayBuffers: () => memory });
    expect(c).not.toBeNull();

    vi.advanceTimersByTime(100); // first reading: 4 MiB live
    memory = 11 * MiB; // 7 MiB above the live level: not yet
    vi.advanceTimersByTime(100);
    expect(collect).not.toHaveBeenCalled();

    // Young garbage: the minor GC frees it, nothing more is needed.
    memory = 13 * MiB;
    youngGarbage = 9 * MiB;
    vi.advanceTimersByTime(100);
    expect(collect.mock.calls).toEqual([['minor']]);

    // Old garbage: the minor GC frees nothing and 18 MiB stay above the live level, so a full GC follows at once.
    memory = 22 * MiB;
    survivors = 10 * MiB; // e.g. four streams' windows are live
    vi.advanceTimersByTime(100);
    expect(collect.mock.calls).toEqual([['minor'], ['minor'], ['major']]);
    expect(c?.collections).toEqual({ minor: 2, major: 1 });

    vi.advanceTimersByTime(100); // reads the 10 MiB that survived: the new live level
    memory = 17 * MiB; // 7 MiB above it
    vi.advanceTimersByTime(100);
    expect(collect).toHaveBeenCalledTimes(3);

    c?.stop();
    memory = 100 * MiB;
    vi.advanceTimersByTime(1000);
    expect(collect).toHaveBeenCalledTimes(3);
  });

  it('does not scavenge again and again when the live level itself rises', () => {
    vi.useFakeTimers();
    let memory = 1 * MiB;
    const collect = vi.fn();
    const opts = { limitBytes: 16 * MiB, busyIntervalMs: 100, idleIntervalMs: 100, collect };
    const c = startBufferCollector({ ...opts, arrayBuffers: () => memory });
    vi.advanceTimersByTime(100);
    memory = 11 * MiB; // streams now hold 10 MiB more, none of it garbage
    vi.advanceTimersByTime(1000);
    expect(collect.mock.calls).toEqual([['minor']]);
    c?.stop();
  });

  it('reads often while ArrayBuffer memory moves and rarely while it is steady', () => {
    vi.useFakeTimers();
    let memory = 0;
    const reads = vi.fn(() => memory);
    const c = startBufferCollector({ busyIntervalMs: 10, idleIntervalMs: 100, collect: () => {}, arrayBuffers: reads });
    vi.advanceTimersByTime(1000);
    expect(reads).toHaveBeenCalledTimes(10); // steady
    reads.mockClear();
    const moving = setInterval(() => {
      memory += 2 * MiB;
    }, 5);
    vi.advanceTimersByTime(1000);
    clearInterval(moving);
    expect(reads.mock.calls.length).toBeGreaterThanOrEqual(90);
    c?.stop();
  });

  it('keeps reading often while garbage piles up again to where it was before the last collection', () => {
    vi.useFakeTimers();
    let memory = 1 * MiB;
    const collect = vi.fn(() => {
      memory = 1 * MiB; // all of it was young garbage
    });
    const opts = { limitBytes: 16 * MiB, busyIntervalMs: 10, idleIntervalMs: 100, collect };
    const c = startBufferCollector({ ...opts, arrayBuffers: () => memory });
    vi.advanceTimersByTime(100); // first reading: 1 MiB
    for (let i = 1; i <= 3; i++) {
      memory = 10 * MiB; // 9 MiB of garbage per busy interval, back to the same level each time
      vi.advanceTimersByTime(10);
      expect(collect).toHaveBeenCalledTimes(i);
    }
    c?.stop();
  });

  it('also checks after every 2 MiB of traffic, without waiting for its timer', () => {
    vi.useFakeTimers();
    let memory = 1 * MiB;
    const collect = vi.fn(() => {
      memory = 1 * MiB;
    });
    const opts = { limitBytes: 16 * MiB, busyIntervalMs: 1000, idleIntervalMs: 1000, collect };
    const c = startBufferCollector({ ...opts, arrayBuffers: () => memory });
    c?.traffic(2 * MiB); // first reading: 1 MiB
    memory = 12 * MiB;
    c?.traffic(MiB);
    expect(collect).not.toHaveBeenCalled(); // not 2 MiB yet
    c?.traffic(MiB);
    expect(collect.mock.calls).toEqual([['minor']]);
    c?.stop();
    memory = 100 * MiB;
    c?.traffic(4 * MiB);
    vi.advanceTimersByTime(5000);
    expect(collect).toHaveBeenCalledTimes(1);
  });

  it('does nothing without a GC function (no --expose-gc)', () => {
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    expect(startBufferCollector()).toBeNull();
  });

  it.skipIf(!built)('keeps the dead Buffers of a real process well below what V8 alone lets pile up', () => {
    // 256 MiB of short-lived 64 KiB Buffers, like socket reads; the peak of ArrayBuffer memory is reported.
    const script = `
      const { startBufferCollector } = await import(${JSON.stringify(BUILT.href)});
      const c = process.env.COLLECT ? startBufferCollector({ busyIntervalMs: 5, idleIntervalMs: 5 }) : null;
      let peak = 0;
      let keep = [];
      for (let i = 0; i < 4096; i++) {
        keep.push(Buffer.allocUnsafe(64 * 1024).fill(i));
        if (keep.length > 8) keep = keep.slice(1);
        if (i % 16 === 0) await new Promise((r) => setTimeout(r, 1));
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
      }
      process.stdout.write(JSON.stringify({ peak, collections: c ? c.collections.minor + c.collections.major : 0 }));
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
