import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeGuestPath, guestPathWord, resolveCommand } from './guest-path.js';

// The resolve command is run here by a real /bin/sh standing in for the guest's login shell.
const base = realpathSync(mkdtempSync(join(tmpdir(), 'tether-guest-path-')));
afterAll(() => rmSync(base, { recursive: true, force: true }));

function resolveLocally(path: string, home: string): string[] {
  const out = execFileSync('/bin/sh', ['-c', resolveCommand(path)], {
    env: { PATH: process.env.PATH, HOME: home, SHELL: '/bin/bash' },
    encoding: 'utf8',
  });
  return out.split('\n');
}

describe('guest paths', () => {
  it('expands ~ to $HOME and quotes the rest', () => {
    expect(guestPathWord('~')).toBe('"$HOME"');
    expect(guestPathWord('~/')).toBe('"$HOME"');
    expect(guestPathWord('~/my dir')).toBe(`"$HOME"/'my dir'`);
    expect(guestPathWord('/home/me')).toBe('/home/me');
    expect(guestPathWord("/x/it's")).toBe(`'/x/it'\\''s'`);
  });

  it('creates the directory and prints the shell and the path with symlinks resolved', () => {
    mkdirSync(join(base, 'var', 'home'), { recursive: true });
    symlinkSync(join(base, 'var', 'home'), join(base, 'home'));
    expect(resolveLocally(join(base, 'home', 'me'), '/nonexistent')).toEqual([
      '/bin/bash',
      join(base, 'var', 'home', 'me'),
      '',
    ]);
    expect(resolveLocally('~/sub dir', join(base, 'home'))).toEqual([
      '/bin/bash',
      join(base, 'var', 'home', 'sub dir'),
      '',
    ]);
  });

  it('falls back to the path as given when it cannot be resolved', () => {
    const file = join(base, 'file');
    execFileSync('/bin/sh', ['-c', `: > '${file}'`]);
    // mkdir fails below a regular file; cd and readlink -f fail too.
    expect(resolveLocally(join(file, 'a', 'b'), base)[1]).toBe(join(file, 'a', 'b'));
  });

  it('shows the resolved path beside the configured one only when they differ', () => {
    expect(describeGuestPath('/home/me', '/var/home/me')).toBe('/home/me (/var/home/me)');
    expect(describeGuestPath('/home/me', '/home/me')).toBe('/home/me');
    expect(describeGuestPath('~/x', null)).toBe('~/x');
  });
});
