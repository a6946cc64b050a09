// `tether shell` against the testbed: a command's output, stdin and exit status pass through as with ssh; the shell
// starts in the guest path of a mounted working directory, or where --workdir says; a host key other than the pinned
// one is refused; an instance that never connected has no key to trust yet.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../host/src/instance.js';
import { cliBuilt, runCli, runCliWith, writeTestbedConfig } from './helpers/cli-helpers.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { freePort } from './helpers/wait.js';

const NAME = 'shell';
const haveGuestBuild = existsSync(new URL('../build/guest/manifest.json', import.meta.url));

describe.skipIf(!canRunTestbed() || !cliBuilt() || !haveGuestBuild)('tether shell', () => {
  const testbed = useTestbed();
  const home = mkdtempSync(join(tmpdir(), 'tether-shell-'));
  const proj = mkdtempSync(join(tmpdir(), 'tether-shell-proj-'));
  const shell = (args: string[], run: Parameters<typeof runCliWith>[2] = {}) =>
    runCliWith(home, ['shell', NAME, ...args], { timeoutMs: 60_000, ...run });

  beforeAll(async () => {
    mkdirSync(join(home, NAME));
    writeTestbedConfig(join(home, NAME, 'tether.yaml'), testbed(), {
      mounts: [{ location: proj, mountPoint: '~/proj', inotify: false }],
    });
    const up = await runCli(home, ['up', NAME], 120_000);
    expect(up.code, up.stderr).toBe(0);
  });

  afterAll(async () => {
    // The guest agent outlives `down` (as in a VM): it is this test's to stop.
    const status = await runCli(home, ['status', NAME, '--json']);
    const guestAgentPid =
      status.code === 0 ? (JSON.parse(status.stdout).guest?.agentPid as number | undefined) : undefined;
    await runCli(home, ['down', NAME]);
    if (guestAgentPid && isAlive(guestAgentPid)) process.kill(guestAgentPid, 'SIGTERM');
    rmSync(home, { recursive: true, force: true });
    rmSync(proj, { recursive: true, force: true });
  });

  it('runs a command: output, stdin and exit status pass through, each argument one word', async () => {
    const hostname = (await testbed().ssh('uname -n')).stdout;
    expect(await shell(['uname', '-n'])).toMatchObject({ code: 0, stdout: hostname });
    expect((await shell(['sh', '-c', 'exit 7'])).code).toBe(7);
    expect(await shell(['cat'], { input: 'over stdin\n' })).toMatchObject({ code: 0, stdout: 'over stdin\n' });
    expect((await shell(['--', 'printf', '%s|', 'a b', "it's", '$HOME'])).stdout).toBe("a b|it's|$HOME|");
    // Options after the command are the command's, even those tether has (help, version, --workdir).
    expect(await shell(['ls', '-d', '-h', '/'])).toMatchObject({ code: 0, stdout: '/\n' });
    expect((await shell(['echo', '-V', '--workdir', '/tmp'])).stdout).toBe('-V --workdir /tmp\n');
  });

  it("runs a command in the login shell, with what the user's profile sets up", async () => {
    await testbed().ssh(`printf 'export FROM_PROFILE=yes\\n' >> "$HOME/.profile"`);
    expect((await shell(['sh', '-c', 'echo "profile: $FROM_PROFILE"'])).stdout).toBe('profile: yes\n');
  });

  it('starts in the guest path of a mounted working directory, or in --workdir', async () => {
    mkdirSync(join(proj, 'sub'));
    const [mount] = JSON.parse((await runCli(home, ['mount', 'ls', NAME, '--json'])).stdout);
    expect(mount).toMatchObject({ state: 'mounted', guestPath: expect.stringMatching(/\/proj$/) });
    expect((await shell(['pwd'], { cwd: join(proj, 'sub') })).stdout).toBe(`${mount.guestPath}/sub\n`);
    expect((await shell(['pwd'], { cwd: tmpdir() })).stdout).not.toContain(mount.guestPath);
    expect((await shell(['--workdir', '/tmp', 'pwd'], { cwd: proj })).stdout).toBe('/tmp\n');
    const missing = await shell(['--workdir', '/no/such/dir', 'pwd']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(
      'tether: --workdir /no/such/dir: no such directory in the guest, or the SSH user may not enter it',
    );
    expect(missing.stderr).not.toMatch(/can't cd|cd: /);
  });

  it('refuses a guest whose host key is not the pinned one', async () => {
    const pin = join(home, NAME, 'host_key');
    const pinned = readFileSync(pin, 'utf8');
    // Another ed25519 key (the client's own) stands in for a guest whose key changed.
    writeFileSync(pin, readFileSync(`${testbed().identityFile}.pub`, 'utf8'));
    try {
      const r = await shell(['true']);
      expect(r.code).toBe(255);
      // tether names the cause it finds on a fresh connection, with both keys and the fix.
      expect(r.stderr).toMatch(
        /^tether: ssh exited 255: host key: changed: pinned ssh-ed25519 SHA256:\S+, server offers/m,
      );
      expect(r.stderr).toContain(`fix: if the VM was re-created on purpose: rm ${pin}`);
    } finally {
      writeFileSync(pin, pinned);
    }
    expect((await shell(['true'])).code).toBe(0);
  });

  it("passes on a command's own status 255 without blaming the connection", async () => {
    const r = await shell(['sh', '-c', 'exit 255']);
    expect(r.code).toBe(255);
    expect(r.stderr).not.toContain('tether:');
  });

  it('says when the guest sshd cannot be reached', async () => {
    mkdirSync(join(home, 'gone'));
    const closed = await freePort();
    writeTestbedConfig(join(home, 'gone', 'tether.yaml'), { ...testbed(), sshPort: closed });
    writeFileSync(join(home, 'gone', 'host_key'), readFileSync(join(home, NAME, 'host_key')));
    const r = await runCli(home, ['shell', 'gone', 'true']);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(new RegExp(`^tether: ssh exited 255: ssh reachable: .*127\\.0\\.0\\.1:${closed}`, 'm'));
  });

  it('says to run up first for an instance that never connected', async () => {
    mkdirSync(join(home, 'fresh'));
    writeTestbedConfig(join(home, 'fresh', 'tether.yaml'), testbed());
    const r = await runCli(home, ['shell', 'fresh', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no host key is pinned for fresh yet: `tether up fresh` connects once and pins it');
  });
});
