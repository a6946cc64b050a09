import { describe, expect, it } from 'vitest';
import { describeKey } from './hostkey.js';
import { hostKeyAlias, knownHostsLine, opensshArgv } from './openssh-command.js';

const ssh = { host: '127.0.0.1', port: 2222, user: 'me', identityFile: '/k/id', useAgent: true };
const target = { ssh, knownHosts: '/i/known_hosts', alias: hostKeyAlias('dev'), tty: true };

describe('opensshArgv', () => {
  it('reaches the configured user, port and key, trusting only the pinned key under its alias', () => {
    const argv = opensshArgv(target, 'exec /bin/sh -c pwd');
    const opt = (flag: string) => argv[argv.indexOf(flag) + 1];
    expect([opt('-p'), opt('-l'), opt('-i'), opt('-F')]).toEqual(['2222', 'me', '/k/id', '/dev/null']);
    expect(argv).toEqual(expect.arrayContaining(['HostKeyAlias=tether.dev', 'UserKnownHostsFile=/i/known_hosts']));
    expect(argv).toContain('StrictHostKeyChecking=yes');
    expect(argv).toContain('-t');
    expect(argv).not.toContain('IdentityAgent=none');
    // The destination and the command come after `--`, so neither is read as an option.
    expect(argv.slice(-3)).toEqual(['--', '127.0.0.1', 'exec /bin/sh -c pwd']);
  });

  it('leaves the ssh-agent and a terminal out when the config and stdin say so', () => {
    const argv = opensshArgv({ ...target, ssh: { ...ssh, useAgent: false, identityFile: undefined }, tty: false }, 'x');
    expect(argv).toContain('IdentityAgent=none');
    expect(argv).toContain('-T');
    expect(argv).not.toContain('-i');
  });
});

describe('opensshArgv timeouts', () => {
  it("gives up on a guest that does not answer, and on a dead link by the agent's keepalive settings", () => {
    expect(opensshArgv(target, 'x')).toEqual(
      expect.arrayContaining(['ConnectTimeout=10', 'ServerAliveInterval=10', 'ServerAliveCountMax=3']),
    );
    const argv = opensshArgv({ ...target, ssh: { ...ssh, keepaliveInterval: 5, keepaliveCountMax: 2 } }, 'x');
    expect(argv).toEqual(expect.arrayContaining(['ServerAliveInterval=5', 'ServerAliveCountMax=2']));
  });
});

describe('knownHostsLine', () => {
  it('files the pinned key under the alias', () => {
    const key = describeKey(Buffer.from('\0\0\0\x0bssh-ed25519\0\0\0\x20' + 'k'.repeat(32), 'latin1'));
    expect(knownHostsLine('tether.dev', key)).toBe(`tether.dev ssh-ed25519 ${key.base64}\n`);
  });
});
