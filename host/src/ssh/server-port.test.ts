import { describe, expect, it } from 'vitest';
import { parseServerPort } from './server-port.js';

describe('parseServerPort', () => {
  it('reads the fourth field of $SSH_CONNECTION', () => {
    expect(parseServerPort('10.0.2.2 51234 10.0.2.15 22\n')).toBe(22);
    expect(parseServerPort('::1 40000 ::1 2200\n')).toBe(2200);
  });

  it('skips what a login shell prints before it', () => {
    expect(parseServerPort('Welcome back!\nhave a nice day 2\n127.0.0.1 5 127.0.0.1 2222\n')).toBe(2222);
  });

  it('is null when sshd set nothing usable', () => {
    expect(parseServerPort('\n')).toBeNull();
    expect(parseServerPort('greeting only\n')).toBeNull();
    expect(parseServerPort('1.2.3.4 5 6.7.8.9 70000\n')).toBeNull();
    expect(parseServerPort('1.2.3.4 5 6.7.8.9 0\n')).toBeNull();
  });
});
