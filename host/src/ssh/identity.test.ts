// Default identity lookup against real key files made by ssh-keygen: the first usable one in OpenSSH's order wins,
// and keys that cannot be used (garbage, a passphrase) are passed over with the reason.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultIdentity } from './identity.js';

const home = mkdtempSync(join(tmpdir(), 'tether-identity-'));
const sshDir = join(home, '.ssh');
mkdirSync(sshDir, { mode: 0o700 });
afterAll(() => rmSync(home, { recursive: true, force: true }));

function keygen(name: string, type: string, passphrase = ''): void {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'test', '-f', join(sshDir, name)]);
}

describe('defaultIdentity', () => {
  it('finds nothing in an empty ~/.ssh', () => {
    expect(defaultIdentity(home)).toEqual({ identity: null, skipped: [] });
  });

  it('passes over unusable keys with the reason and takes the next usable one', () => {
    writeFileSync(join(sshDir, 'id_ed25519'), 'not a key\n', { mode: 0o600 });
    keygen('id_ecdsa', 'ecdsa', 'secret');
    keygen('id_rsa', 'rsa');
    const { identity, skipped } = defaultIdentity(home);
    expect(identity?.path).toBe(join(sshDir, 'id_rsa'));
    expect(skipped).toHaveLength(2);
    expect(skipped[0]).toContain(join(sshDir, 'id_ed25519'));
    expect(skipped[1]).toContain(join(sshDir, 'id_ecdsa'));
  });

  it("prefers id_ed25519 like OpenSSH's default order", () => {
    rmSync(join(sshDir, 'id_ed25519'));
    keygen('id_ed25519', 'ed25519');
    expect(defaultIdentity(home).identity?.path).toBe(join(sshDir, 'id_ed25519'));
  });
});
