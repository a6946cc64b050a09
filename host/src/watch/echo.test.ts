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
});
