import { describe, expect, it } from 'vitest';
import { bootedSince } from './guest-shutdown.js';

describe('bootedSince', () => {
  it('reads a guest that booted after the goodbye from its /proc/uptime', () => {
    expect(bootedSince('12.50 20.10\n', 60_000)).toBe(true);
    expect(bootedSince('3600.00 7000.00\n', 60_000)).toBe(false);
  });

  it('takes the last line (a login shell may print first) and rejects what is not a number', () => {
    expect(bootedSince('Welcome 9 to the guest\n12.50 20.10\n', 60_000)).toBe(true);
    expect(bootedSince('', 60_000)).toBe(false);
    expect(bootedSince('cat: /proc/uptime: No such file or directory\n', 60_000)).toBe(false);
  });
});
