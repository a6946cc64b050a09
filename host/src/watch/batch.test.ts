import { afterEach, describe, expect, it, vi } from 'vitest';
import { coalesce, EventBatcher, type FsEvent } from './batch.js';

describe('coalesce', () => {
  it('keeps what the guest needs to know after two events on a path', () => {
    expect(coalesce(undefined, 'add')).toBe('add');
    expect(coalesce('add', 'change')).toBe('add');
    expect(coalesce('add', 'unlink')).toBeNull();
    expect(coalesce('addDir', 'unlinkDir')).toBeNull();
    expect(coalesce('unlink', 'add')).toBe('change');
    expect(coalesce('change', 'unlink')).toBe('unlink');
  });
});

describe('EventBatcher', () => {
  afterEach(() => vi.useRealTimers());

  it('flushes once the path set is quiet, coalesced and in order', () => {
    vi.useFakeTimers();
    const out: FsEvent[][] = [];
    const b = new EventBatcher((e) => out.push(e), { debounceMs: 50, maxDelayMs: 1000 });
    b.push('a', 'add');
    b.push('b', 'add');
    b.push('a', 'change');
    vi.advanceTimersByTime(49);
    expect(out).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(out).toEqual([
      [
        { path: 'b', kind: 'add' },
        { path: 'a', kind: 'add' },
      ],
    ]);
  });

  it('flushes at the latest maxDelayMs after the first event under a steady stream', () => {
    vi.useFakeTimers();
    const out: FsEvent[][] = [];
    const b = new EventBatcher((e) => out.push(e), { debounceMs: 50, maxDelayMs: 200 });
    for (let i = 0; i < 10; i++) {
      b.push(`f${i}`, 'change');
      vi.advanceTimersByTime(30);
    }
    expect(out.length).toBeGreaterThanOrEqual(1);
    expect(out[0].length).toBeGreaterThan(1);
  });

  it('splits at maxBatch and drops cancelled paths', () => {
    const out: FsEvent[][] = [];
    const b = new EventBatcher((e) => out.push(e), { maxBatch: 2 });
    b.push('x', 'add');
    b.push('x', 'unlink');
    b.push('a', 'add');
    b.push('b', 'add');
    expect(out).toEqual([
      [
        { path: 'a', kind: 'add' },
        { path: 'b', kind: 'add' },
      ],
    ]);
    b.clear();
  });
});
