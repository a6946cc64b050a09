import { describe, expect, it } from 'vitest';
import { loopbackTarget } from './guest-loopback.js';

const listening =
  (...ips: string[]) =>
  (ip: string) =>
    ips.includes(ip) ? ip : undefined;

describe('loopbackTarget', () => {
  it('goes to ::1 when the port listens there only, and back to the asked address otherwise', () => {
    expect(loopbackTarget('127.0.0.1', listening('::1'))).toBe('::1');
    expect(loopbackTarget('::1', listening('127.0.0.1'))).toBe('127.0.0.1');
    expect(loopbackTarget('::1', listening('::ffff:127.0.0.1'))).toBe('127.0.0.1');
    expect(loopbackTarget('127.0.0.1', listening())).toBe('127.0.0.1');
    expect(loopbackTarget('127.0.0.1', listening('127.0.0.1', '::1'))).toBe('127.0.0.1');
  });

  it('stays on the asked address when a wildcard listener takes it too', () => {
    expect(loopbackTarget('127.0.0.1', listening('::1', '0.0.0.0'))).toBe('127.0.0.1');
    expect(loopbackTarget('127.0.0.1', listening('::'))).toBe('127.0.0.1');
  });
});
