import { describe, expect, it } from 'vitest';
import { EchoFilter } from './echo.js';

describe('EchoFilter', () => {
  it('drops a same-size change of a path sent within the window, not after it', () => {
    let now = 1000;
    const f = new EchoFilter(2000, () => now);
    f.record('a.txt', 10);
    now += 500;
    expect(f.isEcho('a.txt', 10)).toBe(true);
    expect(f.isEcho('a.txt', 11)).toBe(false);
    expect(f.isEcho('b.txt', 10)).toBe(false);
    now += 2000;
    expect(f.isEcho('a.txt', 10)).toBe(false);
  });

  it('takes only a whole-second mtime (what an SFTP v3 touch sets) for an echo', () => {
    const f = new EchoFilter(2000, () => 1000);
    f.record('a.txt', 10);
    expect(f.isEcho('a.txt', 10, 1_700_000_000_000)).toBe(true);
    expect(f.isEcho('a.txt', 10, 1_700_000_000_123.456)).toBe(false);
  });
});
