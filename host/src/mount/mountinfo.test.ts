import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isSshfsType, mountedFsType, sshfsMountedCommand } from './mountinfo.js';

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

describe('sshfsMountedCommand', () => {
  // The same answers as mountedFsType + isSshfsType, from the command a guest's /bin/sh and awk run.
  const dir = mkdtempSync(join(tmpdir(), 'tether-mountinfo-'));
  const file = join(dir, 'mountinfo');
  writeFileSync(
    file,
    `${sample}\n50 22 0:43 / /a\\134b\\011c rw - fuse.sshfs :/y rw\n51 22 0:44 / /d rw - fuse.sshfs :/z rw\n52 51 0:45 / /d rw - tmpfs t rw\n`,
  );
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const mounted = (path: string) => spawnSync('/bin/sh', ['-c', sshfsMountedCommand(path, file)]).status === 0;

  it.each([
    ['/home/me with space', true],
    ['/mnt', true],
    ['/a\\b\tc', true],
    ['/d', false],
    ['/home/me', false],
    ['/', false],
  ])('%s: %s', (path, expected) => {
    expect(mounted(path)).toBe(expected);
    expect(isSshfsType(mountedFsType(readFileSync(file, 'utf8'), path))).toBe(expected);
  });
});
