// What a guest cannot do through a tether mount: reach host files outside the export through links it creates
// (builtin server; the server is made to follow links with sshfs -o follow_symlinks so the check is the
// server's), or change anything on a read-only mount (both drivers) — while reads keep working.
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guest, guestTry, type MountFixture, startMount } from './helpers/mount-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';

function lstatExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!canRunTestbed())('mount security', () => {
  const tb = useTestbed();

  describe('escape attempts (builtin, server-side link following)', () => {
    let m: MountFixture;
    let secretDir: string;
    beforeAll(async () => {
      // Only root (the host side here) can read it; the guest user cannot read it by itself.
      secretDir = mkdtempSync(join(tmpdir(), 'tether-secret-'));
      writeFileSync(join(secretDir, 'secret'), 'TOP-SECRET\n');
      m = await startMount(tb(), {
        driver: 'builtin',
        writable: true,
        sshfs: ['follow_symlinks', 'no_contain_symlinks'],
      });
    });
    afterAll(async () => {
      await m?.stop();
      rmSync(secretDir, { recursive: true, force: true });
    });

    it.each([
      ['absolute', () => join(secretDir, 'secret')],
      ['relative ../', () => `../../../../../../../..${join(secretDir, 'secret')}`],
      ['to a directory', () => secretDir],
    ])('denies reading through a guest-made %s link', async (_label, target) => {
      const name = `esc-${Math.random().toString(36).slice(2, 8)}`;
      // The link is made, but with follow_symlinks sshfs stats it afterwards and the server refuses that, so `ln`
      // itself reports EACCES. Should a guest not manage to make it at all, it is planted on the host side (as a
      // link already in the exported tree would be): reading through it must fail either way.
      const made = await guestTry(tb(), `ln -s '${target()}' ${m.mountPoint}/${name}`);
      if (made.code !== 0) expect(made.out).toMatch(/Permission denied|Operation not permitted/);
      if (!lstatExists(join(m.location, name))) {
        symlinkSync(target(), join(m.location, name));
      }
      expect(readlinkSync(join(m.location, name))).toBe(target());
      const read = await guestTry(tb(), `cat ${m.mountPoint}/${name} || ls ${m.mountPoint}/${name}/`);
      expect(read.out).not.toContain('TOP-SECRET');
      expect(read.out).not.toMatch(/^secret$/m);
      expect(read.code).not.toBe(0);
      // Nothing the guest did reached the secret.
      expect(readFileSync(join(secretDir, 'secret'), 'utf8')).toBe('TOP-SECRET\n');
      expect(readdirSync(secretDir)).toEqual(['secret']);
    });

    it('denies writing through a guest-made link to outside the export', async () => {
      await guestTry(tb(), `ln -s '${secretDir}/planted' ${m.mountPoint}/plant && echo x > ${m.mountPoint}/plant`);
      expect(readdirSync(secretDir)).toEqual(['secret']);
    });
  });

  describe.each(['builtin', 'openssh'] as const)('read-only mount (%s)', (driver) => {
    let m: MountFixture;
    beforeAll(async () => {
      m = await startMount(tb(), { driver, writable: false });
      writeFileSync(join(m.location, 'existing'), 'keep me\n');
      mkdirSync(join(m.location, 'dir'));
    });
    afterAll(async () => m?.stop());

    it('reads', async () => {
      expect(await guest(tb(), `cat ${m.mountPoint}/existing`)).toBe('keep me\n');
      expect((await guest(tb(), `ls ${m.mountPoint}`)).split('\n')).toContain('dir');
    });

    it.each([
      'echo x > MP/new',
      'echo x >> MP/existing',
      'truncate -s 0 MP/existing',
      'rm MP/existing',
      'mv MP/existing MP/moved',
      'mkdir MP/newdir',
      'rmdir MP/dir',
      'chmod 600 MP/existing',
      'touch -d @1000000000 MP/existing',
      'ln -s existing MP/link',
      'ln MP/existing MP/hard',
    ])('refuses `%s`', async (cmd) => {
      const r = await guestTry(tb(), cmd.replaceAll('MP', m.mountPoint));
      expect(r.code).not.toBe(0);
      expect(readFileSync(join(m.location, 'existing'), 'utf8')).toBe('keep me\n');
      expect(readdirSync(m.location).sort()).toEqual(['dir', 'existing']);
      expect(statSync(join(m.location, 'existing')).mtimeMs).toBeGreaterThan(1_000_000_000_000);
    });
  });
});
