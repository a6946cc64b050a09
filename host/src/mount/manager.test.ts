// Which host directories a mount's watcher leaves to another mount: those that mount covers in the guest.
import { describe, expect, it } from 'vitest';
import type { MountConfig } from '../config/schema.js';
import { coveredDirs } from './manager.js';

const mount = (location: string, mountPoint?: string): MountConfig =>
  ({ location, mountPoint, writable: false, driver: 'builtin', inotify: true }) as MountConfig;

describe('coveredDirs', () => {
  it('names a mount inside another one in the guest by the outer mount’s host directory there', () => {
    const home = mount('/home/me');
    const work = mount('/home/me/work');
    const data = mount('/srv/data', '/home/me/data');
    expect(coveredDirs(home, [home, work, data])).toEqual(['/home/me/work', '/home/me/data']);
    expect(coveredDirs(work, [home, work, data])).toEqual([]);
  });

  it('leaves a host subdirectory mounted elsewhere in the guest to both, and compares ~ mount points with ~ ones', () => {
    const home = mount('/home/me', '~');
    const elsewhere = mount('/home/me/work', '/work');
    const under = mount('/srv/data', '~/data');
    expect(coveredDirs(home, [home, elsewhere, under])).toEqual(['/home/me/data']);
    // Not a prefix match: /home/me2 is not inside /home/me.
    expect(coveredDirs(mount('/home/me'), [mount('/home/me'), mount('/x', '/home/me2')])).toEqual([]);
  });
});
