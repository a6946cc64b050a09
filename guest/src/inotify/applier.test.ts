import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MARKER_TOUCH } from '@tether/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { FsApplier, touchesOf } from './applier.js';
import { mountPointsOfType, sshfsMountCheck } from './mounts.js';
import { checkRelativePath, InvalidFsPathError } from './paths.js';

// A temp directory stands in for the sshfs mount (the mount check is injected); "outside" is a sibling directory
// that symlinks inside the root point to.

let base: string;
let root: string;
let outside: string;
const OLD = new Date('2001-01-01T00:00:00Z');

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'tether-fs-'));
  root = join(base, 'mnt');
  outside = join(base, 'outside');
  mkdirSync(join(root, 'dir'), { recursive: true });
  mkdirSync(outside);
  for (const f of [join(root, 'dir/file'), join(outside, 'secret')]) {
    writeFileSync(f, 'x');
    utimesSync(f, OLD, OLD);
  }
  for (const d of [root, join(root, 'dir'), outside]) utimesSync(d, OLD, OLD);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

const mtime = (p: string) => lstatSync(p).mtimeMs;
const touched = (p: string) => mtime(p) > OLD.getTime();

function applier(isMount = (r: string) => r === root): FsApplier {
  return new FsApplier(silentLogger, { isMount });
}

describe('fs event paths', () => {
  it('accepts relative paths and refuses those that could leave the root', () => {
    expect(checkRelativePath('a/./b/')).toBe('a/b');
    for (const bad of ['../x', 'a/../../x', 'a/..', '/etc/passwd', '', '.', 'a\0b']) {
      expect(() => checkRelativePath(bad), bad).toThrow(InvalidFsPathError);
    }
  });

  it('coalesces a batch into each path and parent once, the removed paths first when the touch is a marker', () => {
    const events = [
      { path: 'a/f', kind: 'change' },
      { path: 'a/f', kind: 'change' },
      { path: 'a/g', kind: 'unlink' },
      { path: 'top', kind: 'addDir' },
      { path: 'top/old', kind: 'unlinkDir' },
    ] as const;
    expect(touchesOf([...events])).toEqual({ gone: ['a/g', 'top/old'], rest: ['a/f', 'a', 'top', ''] });
    // A touch with the current time (a host without the marker) fails on a removed path: only the parents then.
    expect(touchesOf([...events], false)).toEqual({ gone: [], rest: ['a/f', 'a', 'top', ''] });
  });

  it('parses sshfs mount points from mountinfo, with escaped spaces', () => {
    const info = [
      '36 25 0:32 / /home/me rw,nosuid - fuse.sshfs :/home/me rw,user_id=0',
      '37 25 0:33 / /mnt/with\\040space rw - fuse.sshfs :/x rw',
      '38 25 0:34 / /other rw - ext4 /dev/sda1 rw',
    ].join('\n');
    expect([...mountPointsOfType(info, 'fuse.sshfs')]).toEqual(['/home/me', '/mnt/with space']);
  });
});

describe('FsApplier', () => {
  it('touches changed files, and parents of created and removed ones', async () => {
    const a = applier();
    a.submit({ root, events: [{ path: 'dir/file', kind: 'change' }] });
    await a.idle();
    expect(touched(join(root, 'dir/file'))).toBe(true);
    expect(touched(join(root, 'dir'))).toBe(false);

    a.submit({ root, events: [{ path: 'dir/gone', kind: 'unlink' }] });
    await a.idle();
    expect(touched(join(root, 'dir'))).toBe(true);
    expect(a.failed).toBe(0);
  });

  it("touches a path the host removed before its parent, and counts the touch's ENOENT as done", async () => {
    // dir/file stands for a file the host removed that the guest's caches still show; dir/gone is gone here too.
    const a = applier();
    a.submit({
      root,
      markerTouch: true,
      events: [
        { path: 'dir/file', kind: 'unlink' },
        { path: 'dir/gone', kind: 'unlink' },
      ],
    });
    await a.idle();
    expect(lstatSync(join(root, 'dir/file')).mtimeMs).toBe(MARKER_TOUCH.mtime * 1000);
    expect(lstatSync(join(root, 'dir')).mtimeMs).toBe(MARKER_TOUCH.mtime * 1000);
    expect([a.applied, a.failed]).toEqual([3, 0]);
  });

  it('does not follow symlinks out of the root', async () => {
    symlinkSync(outside, join(root, 'escape'));
    symlinkSync(join(outside, 'secret'), join(root, 'link'));
    const a = applier();
    a.submit({
      root,
      events: [
        { path: 'escape/secret', kind: 'change' },
        { path: 'link', kind: 'change' },
      ],
    });
    await a.idle();
    expect(touched(join(outside, 'secret'))).toBe(false);
    expect(touched(outside)).toBe(false);
    expect(touched(join(root, 'link'))).toBe(true); // the link itself (lutimes), not its target
    expect(a.failed).toBe(1);
  });

  it('ignores a root that is not a mount, and throws for an escaping path', async () => {
    const a = applier(() => false);
    a.submit({ root, events: [{ path: 'dir/file', kind: 'change' }] });
    await a.idle();
    expect(touched(join(root, 'dir/file'))).toBe(false);
    expect(() => applier().submit({ root, events: [{ path: '../outside/secret', kind: 'change' }] })).toThrow(
      InvalidFsPathError,
    );
    expect(() => applier().submit({ root: 'relative', events: [] })).toThrow(InvalidFsPathError);
  });

  it('finds a mount whose root is given through a symlink, as mountinfo lists the resolved path', async () => {
    // /home -> /var/home (Fedora Atomic): the host names /home/me, the kernel lists /var/home/me.
    const home = join(base, 'home');
    symlinkSync(base, home);
    const mountinfo = join(base, 'mountinfo');
    writeFileSync(mountinfo, `36 25 0:32 / ${realpathSync(root)} rw,nosuid - fuse.sshfs :/Users/me rw\n`);
    const a = new FsApplier(silentLogger, { isMount: sshfsMountCheck(mountinfo) });
    a.submit({ root: join(home, 'mnt'), events: [{ path: 'dir/file', kind: 'change' }] });
    await a.idle();
    expect(touched(join(root, 'dir/file'))).toBe(true);
    expect(a.applied).toBe(1);
  });

  it('logs and survives paths that no longer exist', async () => {
    const a = applier();
    a.submit({ root, events: [{ path: 'nope/missing', kind: 'change' }] });
    await a.idle();
    expect(a.failed).toBe(1);
    expect(statSync(root).isDirectory()).toBe(true);
  });
});
