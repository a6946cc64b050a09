// The keepalive tick handed to ssh2: a link that stops answering is given up on interval × countMax seconds after
// its last answer at the latest, as `ssh.keepaliveInterval` and `ssh.keepaliveCountMax` read.
import { describe, expect, it } from 'vitest';
import { keepaliveTickMs } from './session.js';

/** When ssh2 gives up, counted from the last answer: it pings each tick and fails on the tick after countMax pings. */
const givesUpAfterMs = (tickMs: number, countMax: number) => (countMax + 1) * tickMs;

describe('keepaliveTickMs', () => {
  it('makes ssh2 give up interval × countMax after the last answer, not a tick later', () => {
    for (const [interval, countMax] of [
      [10, 3],
      [1, 2],
      [15, 1],
      [60, 100],
    ]) {
      const tick = keepaliveTickMs(interval, countMax);
      expect(Math.abs(givesUpAfterMs(tick, countMax) - interval * countMax * 1000)).toBeLessThanOrEqual(countMax + 1);
      expect(tick).toBeGreaterThan(0);
    }
    expect(keepaliveTickMs(10, 3)).toBe(7500);
  });
});
