// Default identities against real key files made by ssh-keygen, and against the testbed's sshd: OpenSSH's order,
// unusable files passed over with the reason, and a login that falls through a key the server refuses to one it
// accepts.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { canRunTestbed, useTestbed } from '../../../test/helpers/testbed.js';
import { SshConfig } from '../config/schema.js';
import { silentLogger } from '../log.js';
import { defaultIdentities, loadIdentityFile } from './identity.js';
import { SshSession } from './session.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function fakeHome(): { home: string; ssh: string } {
  const home = mkdtempSync(join(tmpdir(), 'tether-identity-'));
  dirs.push(home);
  const ssh = join(home, '.ssh');
  mkdirSync(ssh, { mode: 0o700 });
  return { home, ssh };
}

function keygen(path: string, type: string, passphrase = ''): void {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'test', '-f', path]);
}

describe('defaultIdentities', () => {
  it('finds nothing in an empty ~/.ssh', () => {
    expect(defaultIdentities(fakeHome().home)).toEqual({ identities: [], skipped: [] });
  });

  it("returns every usable key in OpenSSH's order and names the unusable ones", () => {
    const { home, ssh } = fakeHome();
    keygen(join(ssh, 'id_ed25519'), 'ed25519');
    keygen(join(ssh, 'id_ecdsa'), 'ecdsa', 'secret');
    writeFileSync(join(ssh, 'id_rsa'), 'not a key\n', { mode: 0o600 });
    const first = defaultIdentities(home);
    expect(first.identities.map((i) => i.path)).toEqual([join(ssh, 'id_ed25519')]);
    expect(first.skipped.map((s) => s.split(':')[0])).toEqual([join(ssh, 'id_rsa'), join(ssh, 'id_ecdsa')]);

    rmSync(join(ssh, 'id_rsa'));
    keygen(join(ssh, 'id_rsa'), 'rsa');
    copyFileSync(join(ssh, 'id_ed25519.pub'), join(ssh, 'id_ecdsa')); // a public key where a private one belongs
    const second = defaultIdentities(home);
    expect(second.identities.map((i) => i.path)).toEqual([join(ssh, 'id_rsa'), join(ssh, 'id_ed25519')]);
    expect(second.skipped).toEqual([`${join(ssh, 'id_ecdsa')}: not a private key (a .pub file?)`]);
  });
});

describe('a configured identity file that cannot be used', () => {
  it('is refused with the path and what is wrong, and says how to use a key with a passphrase', () => {
    const { ssh } = fakeHome();
    keygen(join(ssh, 'locked'), 'ed25519', 'secret');
    keygen(join(ssh, 'plain'), 'ed25519');
    expect(loadIdentityFile(join(ssh, 'plain'))).toHaveProperty('key');
    expect(loadIdentityFile(join(ssh, 'locked'))).toEqual({
      error: expect.stringMatching(/identity file .*locked cannot be used: it has a passphrase.*ssh-add/),
      encrypted: true,
    });
    expect(loadIdentityFile(join(ssh, 'plain.pub'))).toEqual({
      error: expect.stringMatching(/plain\.pub cannot be used: not a private key/),
      encrypted: false,
    });
    expect(loadIdentityFile(join(ssh, 'missing'))).toEqual({
      error: expect.stringMatching(/cannot read identity file .*missing: ENOENT/),
      encrypted: false,
    });
  });

  it('closes the session for good with that reason, before any connection (nothing listens on the port)', async () => {
    const { ssh } = fakeHome();
    keygen(join(ssh, 'locked'), 'ed25519', 'secret');
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-identity-instance-'));
    dirs.push(instanceDir);
    // Port 1 on loopback: refused at once if anything tried to connect, which would be a second, wrong error.
    const config = SshConfig.parse({
      host: '127.0.0.1',
      port: 1,
      user: 'u',
      identityFile: join(ssh, 'locked'),
      useAgent: false,
    });
    const session = new SshSession({ ssh: config, instanceDir, logger: silentLogger() });
    session.start();
    expect(session.state).toBe('closed');
    expect(session.lastError).toMatch(/has a passphrase/);
    await expect(session.waitConnected(1_000)).rejects.toThrow(/has a passphrase/);
  });
});

describe.skipIf(!canRunTestbed())('SshSession without an identity file', () => {
  const testbed = useTestbed();

  it('logs in with a default key after the server refused an earlier one', async () => {
    const tb = testbed();
    const { home, ssh } = fakeHome();
    keygen(join(ssh, 'id_rsa'), 'rsa'); // not authorized in the guest: tried first, refused
    copyFileSync(tb.identityFile, join(ssh, 'id_ed25519'));
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-identity-instance-'));
    dirs.push(instanceDir);
    const config = SshConfig.parse({ host: '127.0.0.1', port: tb.sshPort, user: tb.user, useAgent: false });
    const session = new SshSession({ ssh: config, instanceDir, logger: silentLogger(), home });
    try {
      session.start();
      await session.waitConnected(20_000);
      expect((await session.execText('id -un')).stdout.trim()).toBe(tb.user);
    } finally {
      await session.close('test over');
    }
  });
});
