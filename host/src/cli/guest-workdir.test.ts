import { describe, expect, it } from 'vitest';
import { guestWorkdir } from './guest-workdir.js';

const mounted = (location: string, guestPath: string) => ({ location, guestPath, state: 'mounted' as const });

describe('guestWorkdir', () => {
  it('maps a directory inside a mounted location to the same place under its guest path', () => {
    expect(guestWorkdir('/home/me/proj/src', [mounted('/home/me', '/home/me')])).toBe('/home/me/proj/src');
    expect(guestWorkdir('/Users/me/proj', [mounted('/Users/me/proj', '/mnt/proj')])).toBe('/mnt/proj');
    expect(guestWorkdir('/Users/me/proj/a b', [mounted('/Users/me/proj', '/mnt/proj/')])).toBe('/mnt/proj/a b');
  });

  it('takes the innermost of nested mounts', () => {
    const mounts = [mounted('/home/me', '/home/me'), mounted('/home/me/work', '/work')];
    expect(guestWorkdir('/home/me/work/x', mounts)).toBe('/work/x');
    expect(guestWorkdir('/home/me/notes', mounts)).toBe('/home/me/notes');
  });

  it('is null outside every location, for a sibling with a common prefix, and for mounts not mounted', () => {
    expect(guestWorkdir('/tmp', [mounted('/home/me', '/home/me')])).toBeNull();
    expect(guestWorkdir('/home/me2', [mounted('/home/me', '/home/me')])).toBeNull();
    expect(guestWorkdir('/home/me/..x', [mounted('/home/me', '/g')])).toBe('/g/..x');
    expect(guestWorkdir('/home/me', [{ location: '/home/me', guestPath: '/home/me', state: 'error' }])).toBeNull();
    expect(guestWorkdir('/home/me', [{ location: '/home/me', guestPath: null, state: 'mounted' }])).toBeNull();
  });
});
