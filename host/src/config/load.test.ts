import { describe, expect, it } from 'vitest';
import { ConfigError } from './errors.js';
import { closestKey, parseConfig } from './load.js';

// Guest paths in tether.yaml: `~` means the SSH user's home in the guest, which only the guest knows. (The rest of
// loading is covered by test/config-load.test.ts.)
const FILE = '/etc/tether/demo.yaml';

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, FILE);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.message);
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('guest paths in tether.yaml', () => {
  it('keeps ~ in a mountPoint for the guest to expand, bare or with a path', () => {
    const c = parseConfig('ssh:\n  user: a\nmounts:\n  - location: /srv\n    mountPoint: ~/srv\n', FILE);
    expect(c.mounts[0].mountPoint).toBe('~/srv');
    const bare = parseConfig('ssh:\n  user: a\nmounts:\n  - location: /srv\n    mountPoint: ~\n', FILE);
    expect(bare.mounts[0].mountPoint).toBe('~');
  });

  it('refuses a relative mountPoint or another user’s ~, naming file, line, key path and expectation', () => {
    expect(problemsOf('ssh:\n  user: a\nmounts:\n  - location: /srv\n    mountPoint: srv\n')).toEqual([
      `${FILE}:5:17: mounts[0].mountPoint: got "srv"; expected an absolute guest path, or ~ or ~/... for the SSH user's home in the guest`,
    ]);
    expect(problemsOf('ssh:\n  user: a\nmounts:\n  - location: /srv\n    mountPoint: ~bob/srv\n')[0]).toMatch(
      /mounts\[0\]\.mountPoint: got "~bob\/srv"; expected an absolute guest path/,
    );
  });

  it('refuses two mounts on one guest directory, naming the second and the first', () => {
    const yaml = (a: string, b: string) => `ssh:\n  user: a\nmounts:\n  - location: /a\n${a}  - location: /b\n${b}`;
    const problems = problemsOf(yaml('    mountPoint: ~/m\n', '    mountPoint: ~/m/\n'));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(
      /^\/etc\/tether\/demo\.yaml:7:\d+: mounts\[1\]\.mountPoint: .*the same guest mount point as mounts\[0\].*give each its own mountPoint/,
    );
    // A location without mountPoint is that path in the guest too.
    expect(problemsOf(yaml('', '    mountPoint: /a\n'))[0]).toMatch(/mounts\[1\]\.mountPoint: .*as mounts\[0\]/);
    // The host's ~ (a location) and the guest user's ~ (a mountPoint) are different directories.
    const homes = 'ssh:\n  user: a\nmounts:\n  - location: ~/p\n  - location: /b\n    mountPoint: ~/p\n';
    expect(parseConfig(homes, FILE).mounts).toHaveLength(2);
  });

  it('refuses two static rules on one host port and two socket rules on one host socket, naming the first', () => {
    const rules = (text: string) => `ssh:\n  user: a\nportForwards:\n${text}`;
    const ports = problemsOf(
      rules(
        '  - {guestPort: 3000, hostPort: 13000, static: true}\n  - {guestPort: 3001, hostPort: 13000, static: true}\n',
      ),
    );
    expect(ports).toHaveLength(1);
    expect(ports[0]).toMatch(
      /^\/etc\/tether\/demo\.yaml:5:\d+: portForwards\[1\]\.hostPort: got 13000; expected: a host port of its own: portForwards\[0\] has this one, and the second could never listen there/,
    );
    // On other addresses, or a detected-listener rule (not static): no clash.
    const apart = rules(
      '  - {guestPort: 3000, hostPort: 13000, hostIP: 127.0.0.2, static: true}\n  - {guestPort: 3001, hostPort: 13000, static: true}\n  - {guestPort: 3002, hostPort: 13000}\n',
    );
    expect(parseConfig(apart, FILE).portForwards).toHaveLength(3);
    // A wildcard overlaps every address of its family.
    const wild = rules(
      '  - {guestPort: 3000, hostPort: 13000, hostIP: 0.0.0.0, static: true}\n  - {guestPort: 3001, hostPort: 13000, static: true}\n',
    );
    expect(problemsOf(wild)[0]).toMatch(/portForwards\[1\]\.hostPort: .*portForwards\[0\] has this one/);
    const sockets = problemsOf(
      rules('  - guestSocket: /var/run/docker.sock\n  - guestSocket: /run/user/1000/docker.sock\n'),
    );
    expect(sockets[0]).toMatch(
      /portForwards\[1\]\.hostSocket: missing; expected: a host socket \(without hostSocket: docker\.sock in the instance directory\) of its own: portForwards\[0\] has this one/,
    );
  });

  it('refuses an IPv4-mapped host address with the IPv4 address to write instead', () => {
    const text = 'ssh:\n  user: a\nportForwards:\n  - {guestPort: 80, hostPort: 8080, hostIP: "::ffff:127.0.0.1"}\n';
    expect(problemsOf(text)[0]).toMatch(
      /portForwards\[0\]\.hostIP: got "::ffff:127\.0\.0\.1"; expected the IPv4 address itself \(127\.0\.0\.1\)/,
    );
  });

  it('reads installDir ~/x as x, which is already relative to the guest home', () => {
    const c = parseConfig('ssh:\n  user: a\nguestAgent:\n  installDir: ~/.local/tether\n', FILE);
    expect(c.guestAgent.installDir).toBe('.local/tether');
    expect(parseConfig('ssh:\n  user: a\nguestAgent:\n  installDir: ~\n', FILE).guestAgent.installDir).toBe('.');
    expect(parseConfig('ssh:\n  user: a\n', FILE).guestAgent.installDir).toBe('.tether-guest');
  });
});

describe('closestKey', () => {
  const ssh = ['host', 'port', 'user', 'identityFile', 'useAgent'];
  it('names the key a misspelt one most likely meant, and none when nothing is that close', () => {
    expect(closestKey('identity_file', ssh)).toBe('identityFile');
    expect(closestKey('IdentityFile', ssh)).toBe('identityFile');
    expect(closestKey('hostPrt', ['guestPort', 'hostPort', 'hostIP'])).toBe('hostPort');
    expect(closestKey('usr', ssh)).toBe('user');
    expect(closestKey('timeout', ssh)).toBeNull();
    // Two as close: no guess.
    expect(closestKey('hostX', ['hostA', 'hostB'])).toBeNull();
  });
});
