// POSIX behaviour of a tether mount seen from inside the guest (real sshfs over FUSE on the testbed), for the
// builtin SFTP server and the OpenSSH driver. Guest and host share the filesystem here, so every effect is checked
// on the host side of the export directly.
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guest, type MountFixture, sha256File, startMount } from './helpers/mount-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';

const MiB = 1024 * 1024;

describe.skipIf(!canRunTestbed()).each(['builtin', 'openssh'] as const)('mount posix (%s driver)', (driver) => {
  const tb = useTestbed();
  let m: MountFixture;
  let src: string;
  const mp = () => m.mountPoint;
  const host = (p: string) => join(m.location, p);

  beforeAll(async () => {
    m = await startMount(tb(), { driver, writable: true });
    src = mkdtempSync(join(tmpdir(), 'tether-src-'));
    chmodSync(src, 0o755);
  });
  afterAll(async () => {
    await m?.stop();
    if (src) rmSync(src, { recursive: true, force: true });
  });

  const sizes = driver === 'builtin' ? [1, 4095, 65_537, MiB + 3, 64 * MiB, 256 * MiB] : [1, 65_537, 64 * MiB];
  it.each(sizes)('writes and reads back %i bytes with the same sha256', async (size) => {
    const file = join(src, `data-${size}`);
    writeFileSync(file, size > 16 * MiB ? Buffer.alloc(size, 0x5a) : randomBytes(size));
    chmodSync(file, 0o644);
    await guest(tb(), `cp ${file} ${mp()}/f-${size}`);
    expect(sha256File(host(`f-${size}`))).toBe(sha256File(file));
    const read = await guest(tb(), `sha256sum < ${mp()}/f-${size}`);
    expect(read.split(' ')[0]).toBe(sha256File(file));
    rmSync(file);
  });

  it('appends and truncates', async () => {
    await guest(tb(), `cd ${mp()} && printf abc > app && printf def >> app && truncate -s 4 app`);
    expect(readFileSync(host('app'), 'utf8')).toBe('abcd');
    await guest(tb(), `truncate -s 10000 ${mp()}/app`);
    expect(statSync(host('app')).size).toBe(10_000);
  });

  it('renames over an existing file', async () => {
    await guest(tb(), `cd ${mp()} && echo one > r1 && echo two > r2 && mv r1 r2`);
    expect(readFileSync(host('r2'), 'utf8')).toBe('one\n');
    expect(() => statSync(host('r1'))).toThrow();
  });

  it('keeps an unlinked file readable through an open descriptor', async () => {
    const out = await guest(tb(), `cd ${mp()} && echo still-here > open && exec 3< open && rm open && cat <&3`);
    expect(out).toBe('still-here\n');
    expect(() => statSync(host('open'))).toThrow();
  });

  it('lists a directory of 10,000 entries and makes/removes directories', async () => {
    mkdirSync(host('big'));
    for (let i = 0; i < 10_000; i++) writeFileSync(host(`big/e${i}`), '');
    expect((await guest(tb(), `ls ${mp()}/big | wc -l`)).trim()).toBe('10000');
    await guest(tb(), `cd ${mp()} && mkdir -p d1/d2/d3 && rmdir d1/d2/d3`);
    expect(statSync(host('d1/d2')).isDirectory()).toBe(true);
    expect(() => statSync(host('d1/d2/d3'))).toThrow();
  });

  it('creates and reads symlinks and hardlinks', async () => {
    await guest(tb(), `cd ${mp()} && echo t > target && ln -s target sym && ln target hard`);
    expect(readlinkSync(host('sym'))).toBe('target');
    expect((await guest(tb(), `readlink ${mp()}/sym`)).trim()).toBe('target');
    expect(lstatSync(host('hard')).ino).toBe(lstatSync(host('target')).ino);
    expect(statSync(host('target')).nlink).toBe(2);
  });

  it('passes symlink targets through as they are: absolute, and with ..', async () => {
    // node_modules/.bin, npm's local packages and Python venvs make such links; sshfs builds that contain symlinks
    // by default refuse to read them (EPERM).
    await guest(tb(), `cd ${mp()} && mkdir -p pkg/bin && echo run > pkg/tool && ln -s ../tool pkg/bin/up`);
    await guest(tb(), `ln -s ${mp()}/pkg/tool ${mp()}/abs`);
    expect(readlinkSync(host('pkg/bin/up'))).toBe('../tool');
    expect((await guest(tb(), `readlink ${mp()}/pkg/bin/up ${mp()}/abs`)).split('\n')).toEqual([
      '../tool',
      `${mp()}/pkg/tool`,
      '',
    ]);
    expect(await guest(tb(), `cat ${mp()}/pkg/bin/up ${mp()}/abs`)).toBe('run\nrun\n');
  });

  // sftp-server follows the link for SETSTAT, which sshfs sends for lutimes too: only tether's server gets this right.
  if (driver === 'builtin')
    it("sets a link's own times: tar extracts dangling links (node_modules/.bin), touch -h leaves the target", async () => {
      const made = await guest(
        tb(),
        'd=$(mktemp -d) && mkdir $d/src && ln -s ../lib/missing.js $d/src/cli && touch -h -d @1000000000 $d/src/cli && ' +
          'tar -C $d/src -cf $d/links.tar cli && echo $d',
      );
      const dir = made.trim();
      try {
        await guest(tb(), `mkdir ${mp()}/bin && tar -C ${mp()}/bin -xf ${dir}/links.tar`);
        expect(readlinkSync(host('bin/cli'))).toBe('../lib/missing.js');
        expect(Math.floor(lstatSync(host('bin/cli')).mtimeMs / 1000)).toBe(1_000_000_000);
        await guest(tb(), `cd ${mp()} && echo t > real && touch -d @1000000000 real && ln -s real alias`);
        await guest(tb(), `touch -h -d @1200000000 ${mp()}/alias`);
        expect(Math.floor(statSync(host('real')).mtimeMs / 1000)).toBe(1_000_000_000);
        expect(Math.floor(lstatSync(host('alias')).mtimeMs / 1000)).toBe(1_200_000_000);
      } finally {
        await guest(tb(), `rm -rf ${dir}`);
      }
    });

  it('changes modes and times', async () => {
    await guest(tb(), `cd ${mp()} && echo x > modes && chmod 640 modes && touch -m -d @1000000000 modes`);
    const st = statSync(host('modes'));
    expect(st.mode & 0o777).toBe(0o640);
    expect(Math.floor(st.mtimeMs / 1000)).toBe(1_000_000_000);
  });

  it('reports the host filesystem in statfs', async () => {
    const out = await guest(tb(), `df -B1 --output=size,avail ${mp()} | tail -1`);
    const [size] = out.trim().split(/\s+/).map(Number);
    const fs = statfsSync(m.location);
    const hostSize = fs.blocks * fs.bsize;
    expect(Math.abs(size - hostSize) / hostSize).toBeLessThan(0.01);
  });

  it('fsyncs', async () => {
    await guest(tb(), `cd ${mp()} && dd if=/dev/zero of=synced bs=4k count=16 conv=fsync status=none && sync synced`);
    expect(statSync(host('synced')).size).toBe(65_536);
  });

  it('takes two writers in parallel', async () => {
    const a = join(src, 'pa');
    const b = join(src, 'pb');
    writeFileSync(a, randomBytes(8 * MiB));
    writeFileSync(b, randomBytes(8 * MiB));
    chmodSync(a, 0o644);
    chmodSync(b, 0o644);
    await guest(tb(), `cp ${a} ${mp()}/pa & cp ${b} ${mp()}/pb & wait`);
    expect(sha256File(host('pa'))).toBe(sha256File(a));
    expect(sha256File(host('pb'))).toBe(sha256File(b));
  });

  it('hosts a git repository', async () => {
    const git = `git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main`;
    await guest(
      tb(),
      `mkdir ${mp()}/repo && cd ${mp()}/repo && ${git} init -q && echo hi > a && mkdir sub && echo yo > sub/b && ` +
        `${git} add -A && ${git} commit -qm first && echo more >> a && ${git} commit -qam second`,
    );
    expect((await guest(tb(), `cd ${mp()}/repo && git log --oneline | wc -l`)).trim()).toBe('2');
    expect((await guest(tb(), `cd ${mp()}/repo && git status --porcelain`)).trim()).toBe('');
    expect(readFileSync(host('repo/a'), 'utf8')).toBe('hi\nmore\n');
  });
});
