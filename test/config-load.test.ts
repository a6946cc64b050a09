// tether.yaml loading: broken files produce one precise line each (file, line:column, key path, bad value, what was
// expected); good files get defaults and `~` expansion; `up` writes a file that loads back.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../host/src/config/errors.js';
import { loadConfig, parseConfig } from '../host/src/config/load.js';
import { copyConfigFile, updateConfigFile, writeInitialConfig } from '../host/src/config/write.js';

const FILE = '/etc/tether/demo.yaml';

function errorOf(text: string): ConfigError {
  try {
    parseConfig(text, FILE);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const broken: { name: string; text: string; expect: RegExp[] }[] = [
  {
    name: 'YAML syntax error with line and column',
    text: 'ssh:\n  user: a\n  port: [1, 2\n',
    expect: [/^\/etc\/tether\/demo\.yaml:\d+:\d+: YAML syntax error: /],
  },
  {
    name: 'a mis-indented key: one line, not one per error the parser reports at that spot',
    text: 'ssh:\n  user: a\n   port: 22\n',
    expect: [/^\/etc\/tether\/demo\.yaml:2:9: YAML syntax error: Nested mappings are not allowed/],
  },
  {
    name: 'alias to an anchor that does not exist',
    text: 'ssh:\n  user: a\n  host: *nope\n',
    expect: [/^\/etc\/tether\/demo\.yaml:3:9: YAML error: Unresolved alias .*nope/],
  },
  {
    name: 'aliases that expand past the alias limit',
    text: `a: &a [x, x, x, x, x, x, x, x, x, x]\n${Array.from(
      { length: 8 },
      (_, i) =>
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(97 + i)}`)
          .join(', ')}]`,
    ).join('\n')}\nssh:\n  user: a\n`,
    expect: [/^\/etc\/tether\/demo\.yaml:2:\d+: YAML error: Excessive alias count/],
  },
  {
    name: 'duplicate key',
    text: 'ssh:\n  user: a\n  user: b\n',
    expect: [/demo\.yaml:3:3: YAML syntax error: Map keys must be unique/],
  },
  {
    name: 'missing ssh section',
    text: 'portForwards: []\n',
    expect: [/demo\.yaml:1:1: ssh: missing; expected object/],
  },
  {
    name: 'missing ssh.user',
    text: 'ssh:\n  host: 127.0.0.1\n',
    expect: [/demo\.yaml:2:3: ssh\.user: missing; expected string/],
  },
  {
    name: 'port out of range names value and bound',
    text: 'ssh:\n  user: a\n  port: 70000\n',
    expect: [/demo\.yaml:3:9: ssh\.port: got 70000; expected number to be <=65535/],
  },
  {
    name: 'port of the wrong type',
    text: 'ssh:\n  user: a\n  port: "22"\n',
    expect: [/ssh\.port: got "22"; expected number, received string/],
  },
  {
    name: 'unknown top-level key',
    text: 'ssh:\n  user: a\nportForward: []\n',
    expect: [/demo\.yaml:3:1: portForward: unknown key \(got \[\]\); did you mean portForwards\?/],
  },
  {
    name: 'unknown nested key',
    text: 'ssh:\n  user: a\n  identity_file: ~/.ssh/id\n',
    expect: [
      /demo\.yaml:3:3: ssh\.identity_file: unknown key \(got "~\/\.ssh\/id"\); did you mean identityFile\? expected one of: host, port, user, identityFile,/,
    ],
  },
  {
    name: 'bad enum',
    text: 'ssh:\n  user: a\nguestAgent:\n  provision: always\n',
    expect: [/guestAgent\.provision: got "always"; expected one of "auto"\|"never"/],
  },
  {
    name: 'host range not as long as guest range',
    text:
      'ssh:\n  user: a\nportForwards:\n  - guestPort: 80\n  - guestPort: 81\n' +
      '  - guestPortRange: [8000, 8010]\n    hostPortRange: [9000, 9005]\n',
    expect: [
      /demo\.yaml:7:20: portForwards\[2\]\.hostPortRange: got \[9000,9005\]; expected: host range 9000-9005 must be as long as guest range 8000-8010/,
    ],
  },
  {
    name: 'hostPort and hostPortRange both: that alone, not also a guess at the range lengths',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestPort: 80\n    hostPort: 8080\n    hostPortRange: [1, 2]\n',
    expect: [/portForwards\[0\]\.hostPort: got 8080; expected: give hostPort or hostPortRange, not both/],
  },
  {
    name: 'bad IP in a rule',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestIP: 10.0.0.300\n',
    expect: [/portForwards\[0\]\.guestIP: got "10\.0\.0\.300"; expected an IPv4 or IPv6 address/],
  },
  {
    name: 'typo in a port rule key',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestPort: 80\n    hostPrt: 8080\n',
    expect: [/demo\.yaml:5:5: portForwards\[0\]\.hostPrt: unknown key \(got 8080\); did you mean hostPort\?/],
  },
  {
    name: 'socket rule with a bad value',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestSocket: 5\n',
    expect: [/portForwards\[0\]\.guestSocket: got 5; expected string, received number/],
  },
  {
    name: 'socket rule with a relative guest path',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestSocket: docker.sock\n',
    expect: [/demo\.yaml:4:18: portForwards\[0\]\.guestSocket: got "docker\.sock"; expected an absolute guest path/],
  },
  {
    name: 'guest agent socket given as a relative path',
    text: 'ssh:\n  user: a\nguestAgent:\n  socket: agent.sock\n',
    expect: [/demo\.yaml:4:11: guestAgent\.socket: got "agent\.sock"; expected an absolute guest path/],
  },
  {
    name: 'rule with a host port and no guest port',
    text: 'ssh:\n  user: a\nportForwards:\n  - hostPort: 8080\n',
    expect: [
      /demo\.yaml:4:5: portForwards\[0\]\.guestPort: missing; expected: hostPort needs guestPort or guestPortRange/,
    ],
  },
  {
    name: 'rule that mixes a port and a socket',
    text: 'ssh:\n  user: a\nportForwards:\n  - guestPort: 80\n    hostPort: 8080\n    guestSocket: /run/x.sock\n',
    expect: [
      /demo\.yaml:4:5: portForwards\[0\]: .*a rule forwards either a port .* or a unix socket .*not both: got guestPort, hostPort, guestSocket/,
    ],
  },
  {
    name: 'mount with a wrong driver and a missing location',
    text: 'ssh:\n  user: a\nmounts:\n  - driver: nfs\n',
    expect: [/mounts\[0\]\.location: missing; expected string/, /mounts\[0\]\.driver: got "nfs"; expected one of/],
  },
  {
    name: "static rule onto the host port of the VM's SSH (QEMU's hostfwd on loopback)",
    text: 'ssh:\n  user: a\n  host: localhost\n  port: 2222\nportForwards:\n  - guestPort: 3000\n    hostPort: 2222\n    static: true\n',
    expect: [
      /demo\.yaml:7:15: portForwards\[0\]\.hostPort: .*got 2222; expected another host port: host port 2222 is where this host reaches the VM's sshd \(ssh\.port\)$/m,
    ],
  },
  {
    name: 'whole file is a list',
    text: '- a\n- b\n',
    expect: [/demo\.yaml:1:1: \(top level\): got \["a","b"\]; expected object, received array/],
  },
];

describe('config errors', () => {
  for (const c of broken) {
    it(c.name, () => {
      const err = errorOf(c.text);
      expect(err.file).toBe(FILE);
      expect(err.problems.length).toBe(c.expect.length);
      c.expect.forEach((re, i) => {
        expect(err.problems.map((p) => p.message).some((m) => re.test(m))).toBe(true);
        expect(err.problems[i].message.includes('\n')).toBe(false);
      });
    });
  }

  it('names an unreadable file', () => {
    expect(() => loadConfig('/nonexistent/tether.yaml')).toThrow(/^\/nonexistent\/tether\.yaml: cannot read: ENOENT/);
  });
});

describe('config defaults and expansion', () => {
  it('fills defaults and mounts the home directory read-only when mounts is absent', () => {
    const c = parseConfig('ssh:\n  user: a\n  identityFile: ~/.ssh/id_ed25519\n', FILE);
    expect(c.ssh).toMatchObject({ host: '127.0.0.1', port: 22, identityFile: join(homedir(), '.ssh/id_ed25519') });
    expect(c.guestAgent).toEqual({ socket: '/run/tether/agent.sock', provision: 'auto', installDir: '.tether-guest' });
    expect(c.mounts).toEqual([
      expect.objectContaining({ location: homedir(), mountPoint: homedir(), writable: false, driver: 'builtin' }),
    ]);
    expect(c.portForwards).toEqual([]);
    expect(c.maxForwards).toBe(4096);
  });

  it('reads a bare ~ (YAML null) as the home directory for a mount location, but refuses an empty one', () => {
    const c = parseConfig('ssh:\n  user: a\nmounts:\n  - location: ~\n    writable: true\n', FILE);
    expect(c.mounts).toHaveLength(1);
    expect(c.mounts[0]).toMatchObject({ location: homedir(), mountPoint: homedir(), writable: true });
    const empty = errorOf('ssh:\n  user: a\nmounts:\n  - location:\n    writable: true\n');
    expect(empty.problems.map((p) => p.message)).toEqual([
      expect.stringMatching(/mounts\[0\]\.location: got null; expected string/),
    ]);
  });

  it("loads the README's full example config", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)]
      .map((m) => m[1])
      .find((b) => b.includes('maxForwards'));
    expect(example, 'a yaml block with every key in README.md').toBeDefined();
    const c = parseConfig(example!, 'README.md');
    expect(c.mounts[0].location).toBe(homedir());
    expect(c.portForwards.length).toBeGreaterThan(3);
  });

  it('keeps an empty mounts list empty and expands hostSocket and relative paths', () => {
    const c = parseConfig(
      'ssh:\n  user: a\n  identityFile: keys/id\nmounts: []\nportForwards:\n  - guestSocket: /var/run/docker.sock\n    hostSocket: ~/docker.sock\n',
      FILE,
    );
    expect(c.mounts).toEqual([]);
    expect(c.ssh.identityFile).toBe('/etc/tether/keys/id');
    expect(c.portForwards[0]).toEqual({
      guestSocket: '/var/run/docker.sock',
      hostSocket: join(homedir(), 'docker.sock'),
    });
  });
});

describe('config written by tether up', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a commented file that loads back and can be updated in place', () => {
    const file = join(dir, 'tether.yaml');
    writeInitialConfig(file, { host: '127.0.0.1', port: 2222, user: 'dev', identityFile: '/keys/id' });
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^# tether instance config/);
    expect(text).toMatch(/# mounts:/);
    const c = loadConfig(file);
    expect(c.ssh).toMatchObject({ host: '127.0.0.1', port: 2222, user: 'dev', identityFile: '/keys/id' });
    expect(c.mounts.length).toBe(1);

    expect(updateConfigFile(file, { port: 2223 })).toBe(true);
    expect(updateConfigFile(file, { port: 2223 })).toBe(false);
    expect(loadConfig(file).ssh.port).toBe(2223);
    expect(readFileSync(file, 'utf8')).toMatch(/# tether instance config/);
  });

  it('copies a -c file with its relative host paths made absolute, keeping comments and other paths', () => {
    const src = join(dir, 'project');
    mkdirSync(src, { recursive: true });
    writeFileSync(
      join(src, 'vm.yaml'),
      '# my vm\nssh:\n  user: a\n  identityFile: keys/id # the key\nmounts:\n  - location: .\n  - location: ~/code\n' +
        'portForwards:\n  - guestSocket: /run/docker.sock\n    hostSocket: sockets/docker.sock\n  - guestPort: 80\n    hostPort: 8080\n',
    );
    const dest = join(dir, 'instance.yaml');
    copyConfigFile(join(src, 'vm.yaml'), dest);
    const text = readFileSync(dest, 'utf8');
    expect(text).toMatch(/^# my vm/);
    expect(text).toContain(`identityFile: ${join(src, 'keys/id')} # the key`);
    const c = loadConfig(dest);
    expect(c.ssh.identityFile).toBe(join(src, 'keys/id'));
    expect(c.mounts.map((m) => m.location)).toEqual([src, join(homedir(), 'code')]);
    expect(c.portForwards[0]).toEqual({
      guestSocket: '/run/docker.sock',
      hostSocket: join(src, 'sockets/docker.sock'),
    });
  });

  it('leaves a file with syntax errors as it is when up flags would update it, naming where the errors are', () => {
    const file = join(dir, 'broken.yaml');
    const text = 'ssh:\n  user: a\nportForwards:\n  - guestPortRange: [9000, 9010\n';
    writeFileSync(file, text);
    expect(() => updateConfigFile(file, { port: 2223 })).toThrow(new RegExp(`^${file}:\\d+:\\d+: YAML syntax error`));
    expect(readFileSync(file, 'utf8')).toBe(text);
  });

  it('reports a file edited into an invalid state', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'ssh:\n  user: a\n  keepaliveInterval: 0.001\n');
    expect(() => loadConfig(file)).toThrow(`${file}:3:22: ssh.keepaliveInterval: got 0.001; expected number to be >=1`);
  });
});
