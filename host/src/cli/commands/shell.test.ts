import { describe, expect, it } from 'vitest';
import { shellScript } from './shell.js';

describe('shellScript', () => {
  it('runs the login shell, or the command with each argument quoted as one word', () => {
    expect(shellScript(null, [])).toBe('exec "$SHELL" -l');
    expect(shellScript(null, ['printf', '%s', "a b'c"])).toBe(`exec printf %s 'a b'\\''c'`);
  });

  it('changes to a mounted directory quietly, and to a --workdir or fails', () => {
    expect(shellScript({ dir: '/home/me/a b', required: false }, ['pwd'])).toBe(
      `cd '/home/me/a b' 2>/dev/null\nexec pwd`,
    );
    expect(shellScript({ dir: '/srv', required: true }, [])).toMatch(/^cd \/srv \|\| exit 1\n/);
  });

  it('reads ~ and ~/x as the guest home', () => {
    expect(shellScript({ dir: '~', required: true }, [])).toMatch(/^cd "\$HOME" \|\| exit 1/);
    expect(shellScript({ dir: '~/my dir', required: true }, [])).toMatch(/^cd "\$HOME"\/'my dir' \|\| exit 1/);
  });
});
