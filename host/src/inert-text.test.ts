import { describe, expect, it } from 'vitest';
import { guestText } from './inert-text.js';

describe('guestText', () => {
  it('makes guest text one inert line: breaks become a space, controls and bidi overrides escapes', () => {
    expect(guestText('evil\nhost')).toBe('evil host');
    expect(guestText('python3 -c "\n\timport x"')).toBe('python3 -c " import x"');
    expect(guestText('\x1b]0;PWNED\x07')).toBe('\\x1b]0;PWNED\\x07');
    expect(guestText('run\u202egnp.exe')).toBe('run\\u202egnp.exe');
    expect(guestText('a\u2028b\u0085c')).toBe('a\\u2028b\\x85c');
    const plain = 'nginx: master process /usr/sbin/nginx — ünïcödé 日本';
    expect(guestText(plain)).toBe(plain);
  });
});
