import { describe, expect, it } from 'vitest';
import { isSshfsType, mountedFsType } from './mountinfo.js';

const sample = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
  '47 22 0:40 / /home/me\\040with\\040space rw,nosuid,nodev,relatime shared:2 - fuse.sshfs :/Users/me rw,user_id=1000',
  '48 22 0:41 / /mnt rw - tmpfs tmpfs rw',
  '49 48 0:42 / /mnt rw - fuse.sshfs :/x rw',
  'garbage line',
].join('\n');

describe('mountedFsType', () => {
  it('finds a mount point with escaped spaces', () => {
    expect(mountedFsType(sample, '/home/me with space')).toBe('fuse.sshfs');
  });
  it('reports the topmost of stacked mounts', () => {
    expect(mountedFsType(sample, '/mnt')).toBe('fuse.sshfs');
  });
  it('returns null when nothing is mounted there', () => {
    expect(mountedFsType(sample, '/home/me')).toBeNull();
    expect(mountedFsType('', '/')).toBeNull();
  });
  it('recognises sshfs types only', () => {
    expect(isSshfsType('fuse.sshfs')).toBe(true);
    expect(isSshfsType('ext4')).toBe(false);
    expect(isSshfsType(null)).toBe(false);
  });
});
