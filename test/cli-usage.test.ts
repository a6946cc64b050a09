// The tether CLI without a VM: help with examples and exit codes, usage errors (exit 2), config errors naming file,
// line and key (exit 1), commands on a stopped instance, a foreground boot that fails, and an agent left failed by
// an interrupted up. Runs the built CLI.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { instancePaths, isAlive, readPid } from '../host/src/instance.js';
import { CLI, cliBuilt, runCli } from './helpers/cli-helpers.js';
import { waitFor } from './helpers/wait.js';

describe.skipIf(!cliBuilt())('tether CLI usage', () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-cli-usage-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  /**
   * NODE_OPTIONS under which the agent process (and not the CLI's) hangs before its own code runs, having written its
   * pid to `loaded`: an agent stuck loading, or not loaded yet.
   */
  const hangAgent = (name: string) => {
    const script = join(home, `${name}.mjs`);
    const loaded = join(home, `${name}.pid`);
    writeFileSync(
      script,
      `import { writeFileSync } from 'node:fs';
if (process.argv.some((a) => a.endsWith('agent-main.js'))) {
  writeFileSync(${JSON.stringify(loaded)}, String(process.pid));
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120_000);
}
`,
    );
    return { loaded, nodeOptions: `--import ${script}` };
  };
  const cfg = (text: string) => {
    const file = join(home, `cfg-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, text);
    return file;
  };

  it('prints help with examples and exit codes for every command', async () => {
    for (const args of [
      ['--help'],
      ['up', '--help'],
      ['forward', 'ls', '--help'],
      ['logs', '--help'],
      ['doctor', '--help'],
    ]) {
      const r = await runCli(home, args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Examples:\n {2}\$ tether /);
      expect(r.stdout).toMatch(/Exit codes: 0 ok, 1 failure .*, 2 usage error/);
    }
  });

  it('refuses an instance directory too deep for its control socket, before starting anything', async () => {
    const deep = join(home, 'd'.repeat(100));
    const r = await runCli(deep, ['up', 'deep', '--ssh', 'dev@127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^tether: the control socket \S+\/deep\/ha\.sock is \d+ bytes long, and a unix socket path may have at most 10[37] here: set TETHER_HOME to a shorter directory/,
    );
    expect(existsSync(join(deep, 'deep', 'ha.pid'))).toBe(false);
  });

  it('exits 2 on usage errors with one line', async () => {
    expect((await runCli(home, ['frobnicate'])).code).toBe(2);
    // Help asked for is no error; help shown for a missing command is a usage error.
    expect((await runCli(home, ['forward', '--help'])).code).toBe(0);
    const bare = await runCli(home, ['forward']);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/Examples:\n {2}\$ tether forward ls dev/);
    const bad = await runCli(home, ['up', 'Bad_Name', '--ssh', 'a@b']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^tether: invalid instance name "Bad_Name": expected 1-63 characters/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const noTarget = await runCli(home, ['up', 'fresh']);
    expect(noTarget.code).toBe(2);
    expect(noTarget.stderr).toMatch(/instance fresh does not exist yet; give --ssh/);
    const nosuch = await runCli(home, ['status', 'nosuch']);
    expect(nosuch).toMatchObject({ code: 1, stderr: expect.stringMatching(/no instance nosuch/) });
    expect((await runCli(home, ['logs', 'x', '--level', 'loud'])).code).toBe(2);
    const component = await runCli(home, ['logs', 'x', '--component', 'forward,frwd']);
    expect(component.code).toBe(2);
    expect(component.stderr).toMatch(/unknown component frwd; expected one of agent, ssh, link, forward/);
    const target = await runCli(home, ['up', 'x', '--ssh', 'me@host:99999']);
    expect(target.code).toBe(2);
    expect(target.stderr).toMatch(/--ssh me@host:99999: port 99999 is not a port/);
  });

  it('refuses a broken config with file, line, key path, value and expectation, and no stack trace', async () => {
    const file = cfg('ssh:\n  user: dev\n  port: 0\nportForwards:\n  - guestPort: 80\n    hostPrt: 8080\n');
    const r = await runCli(home, ['up', 'broken', '-c', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}:3:9: ssh.port: got 0; expected number to be >=1`);
    expect(r.stderr).toContain(`${file}:6:5: portForwards[0].hostPrt: unknown key`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('names an identity file it cannot read before starting anything', async () => {
    const own = mkdtempSync(join(tmpdir(), 'tether-cli-nokey-')); // its instance stays out of the others' `ls`
    const missing = join(own, 'no-such-key');
    const r = await runCli(own, ['up', 'nokey', '--ssh', 'dev@127.0.0.1:1', '-i', missing]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^tether: -i ${missing} cannot be read \\(ENOENT\\)`));
    // Nothing is created for it: a first `up` that fails here leaves no instance behind.
    expect(existsSync(join(own, 'nokey'))).toBe(false);
    // An instance whose tether.yaml names a key that is gone says where the name comes from.
    mkdirSync(join(own, 'gone'), { recursive: true });
    writeFileSync(join(own, 'gone', 'tether.yaml'), `ssh:\n  user: dev\n  port: 1\n  identityFile: ${missing}\n`);
    const gone = await runCli(own, ['up', 'gone']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(new RegExp(`tether\\.yaml: ssh\\.identityFile ${missing} cannot be read \\(ENOENT\\)`));
    expect(existsSync(join(own, 'gone', 'ha.pid'))).toBe(false);
    // A first `up -c FILE` whose file names such a key creates nothing either.
    const file = join(own, 'given.yaml');
    writeFileSync(file, `ssh:\n  user: dev\n  port: 1\n  identityFile: ${missing}\n`);
    const given = await runCli(own, ['up', 'fromfile', '-c', file]);
    expect(given.code).toBe(1);
    expect(given.stderr).toMatch(new RegExp(`given\\.yaml: ssh\\.identityFile ${missing} cannot be read \\(ENOENT\\)`));
    expect(existsSync(join(own, 'fromfile'))).toBe(false);
    rmSync(own, { recursive: true, force: true });
  });

  it('creates an instance from flags and reports it as stopped', async () => {
    // Port 1 on loopback: nothing answers, so up fails fast on requirement 1 and names it.
    const r = await runCli(home, ['up', 'idle', '--ssh', 'dev@127.0.0.1:1', '--timeout', '3']);
    expect(r.stdout).toMatch(/created instance idle/);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^tether: (requirement 1 of \d \(ssh reachable\) failed|timed out waiting for requirement 1 of \d \(ssh reachable\))/,
    );
    expect(r.stderr).toMatch(/log: .*idle\/logs\/current\.log/);
    const ls = await runCli(home, ['ls', '--json']);
    expect(JSON.parse(ls.stdout)).toEqual([
      expect.objectContaining({ name: 'idle', ssh: 'dev@127.0.0.1:1', state: 'stopped' }),
    ]);
    const status = await runCli(home, ['status', 'idle', '--json']);
    const stopped = JSON.parse(status.stdout);
    expect(stopped).toMatchObject({ name: 'idle', state: 'stopped', ssh: { state: 'closed' }, guest: null });
    // The same keys as a running agent's status, empty.
    expect(Object.keys(stopped).sort()).toEqual([
      'build',
      'forwards',
      'guest',
      'lastErrors',
      'link',
      'logFile',
      'mountStates',
      'mounts',
      'name',
      'pid',
      'requirements',
      'ssh',
      'startedAt',
      'state',
      'stopReason',
    ]);
    // The agent `up` stopped says why: the requirement that failed.
    expect(stopped.stopReason).toMatch(/^tether up: .*requirement 1 of \d \(ssh reachable\)/);
    expect(stopped.forwards).toEqual({
      forwarding: 0,
      conflict: 0,
      privileged: 0,
      ignored: 0,
      suspended: 0,
      error: 0,
      total: 0,
      capped: 0,
    });
    expect(stopped.mounts.total).toBe(0);
    // Why it is not running: what its last run logged.
    expect(stopped.lastErrors).toContainEqual(
      expect.objectContaining({
        component: 'agent',
        msg: expect.stringMatching(/^requirement 1 of \d failed: ssh reachable/),
      }),
    );
    const text = (await runCli(home, ['status', 'idle'])).stdout;
    expect(text).toMatch(/^last run: {5}stopped: tether up: .*ssh reachable/m);
    expect(text).toMatch(/^last errors:$/m);
    expect(text).toMatch(/^ {2}\S+ \[agent\] requirement 1 of \d failed: ssh reachable/m);
    // A tether.yaml broken since does not hide the last run: both are shown, and the exit says what to fix.
    const config = instancePaths('idle', home).config;
    const good = readFileSync(config, 'utf8');
    writeFileSync(config, `${good}\nbogus: [\n`);
    try {
      const broken = await runCli(home, ['status', 'idle']);
      expect(broken.code).toBe(1);
      expect(broken.stdout).toMatch(/^config: {7}does not load: .*tether\.yaml:\d+:\d+: /m);
      expect(broken.stdout).toMatch(/^last run: {5}stopped: tether up: /m);
      expect(broken.stderr).toMatch(
        /^tether: instance idle: .*tether\.yaml does not load; fix it before `tether up idle`/,
      );
      const brokenJson = await runCli(home, ['status', 'idle', '--json']);
      expect(brokenJson.code).toBe(1);
      expect(JSON.parse(brokenJson.stdout)).toMatchObject({
        state: 'stopped',
        ssh: { target: null },
        configError: expect.stringMatching(/tether\.yaml:\d+:\d+: /),
        stopReason: expect.stringMatching(/^tether up: /),
      });
    } finally {
      writeFileSync(config, good);
    }
    const fwd = await runCli(home, ['forward', 'ls', 'idle']);
    expect(fwd.code).toBe(1);
    expect(fwd.stderr).toMatch(/instance idle: the agent is not running .*tether up idle/);
    const down = await runCli(home, ['down', 'idle']);
    expect(down).toMatchObject({ code: 0, stdout: 'instance idle is not running\n' });
    const spec = await runCli(home, ['forward', 'add', 'idle', '80:']);
    expect(spec).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('80:: expected [HOSTIP:]HOSTPORT:GUESTPORT'),
    });
    // An agent gone without stopping whose log rotated past the start of its run: its pid file tells.
    const paths = instancePaths('idle', home);
    rmSync(paths.logs, { recursive: true, force: true });
    mkdirSync(paths.logs);
    const gone = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(paths.pidFile, `${gone}\n`);
    expect((await runCli(home, ['status', 'idle'])).stdout).toMatch(
      new RegExp(
        `^last run: {5}stopped: its agent \\(pid ${gone}\\) ended without stopping: the agent was killed`,
        'm',
      ),
    );
  });

  it('up --foreground with a key that has a passphrase fails requirement 1 with the reason and exits 1', async () => {
    const key = join(home, 'locked_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-C', 'test', '-f', key]);
    const r = await runCli(home, [
      'up',
      'locked',
      '--ssh',
      'dev@127.0.0.1:1',
      '-i',
      key,
      '--foreground',
      '--timeout',
      '30',
    ]);
    // Not 137: a failed boot in the foreground stops the agent in this process instead of signalling it.
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /requirement 1 of \d \(ssh reachable\) failed: .*locked_key cannot be used: it has a passphrase/,
    );
    expect(r.stderr).toMatch(/\(agent stopped\)/);
    const status = await runCli(home, ['status', 'locked', '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ name: 'locked', state: 'stopped' });
  });

  it('up starts an agent whose boot failed after its up was interrupted anew, instead of reporting the old failure', async () => {
    const key = join(home, 'plain_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    // Port 1: nothing answers, so requirement 1 fails when its 2 s deadline passes.
    const args = ['up', 'cut', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '2'];
    const first = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, TETHER_HOME: home },
      stdio: 'ignore',
    });
    const paths = instancePaths('cut', home);
    await waitFor(() => existsSync(paths.socket), { what: 'the agent to serve its socket', timeoutMs: 20_000 });
    first.kill('SIGKILL'); // the interrupted up: it never sees the failure, so it does not stop the agent
    const state = async () => JSON.parse((await runCli(home, ['status', 'cut', '--json'])).stdout).state;
    await waitFor(async () => (await state()) === 'failed', { what: 'the boot to fail', timeoutMs: 20_000 });
    const oldPid = readPid(paths);

    const again = await runCli(home, ['up', 'cut', '--timeout', '2']);
    expect(again.stdout).toMatch(
      /instance cut has an agent whose boot failed \(requirement 1: .*\); starting it again/,
    );
    expect(again.stdout).not.toMatch(/already running/);
    expect(again.code).toBe(1); // the new agent cannot reach port 1 either
    expect(again.stderr).toMatch(/(requirement 1 of \d \(ssh reachable\)|timed out waiting).*\(agent stopped\)/);
    expect(oldPid && isAlive(oldPid)).toBeFalsy();
    expect(await state()).toBe('stopped');
  });

  it('up says the agent was stopped when down stops it while up waits', async () => {
    const key = join(home, 'plain_key_2');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    const up = runCli(home, ['up', 'halted', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '60']);
    const paths = instancePaths('halted', home);
    await waitFor(() => existsSync(paths.socket), { what: 'the agent to serve its socket', timeoutMs: 20_000 });
    expect((await runCli(home, ['down', 'halted'])).code).toBe(0);
    const r = await up;
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✗ requirement 1 of \d: ssh reachable: the agent was stopped: tether down/);
  });

  it('down stops an agent that up has started and that is still loading, and up says so', async () => {
    const key = join(home, 'plain_key_6');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    // The agent process stops before its own code runs, as if Node were still loading it: no socket, no pid of its own.
    const { loaded, nodeOptions } = hangAgent('held');
    const args = ['up', 'early', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '30'];
    const up = runCli(home, args, 60_000, { NODE_OPTIONS: nodeOptions });
    await waitFor(() => existsSync(loaded), { what: 'the agent process to start', timeoutMs: 20_000 });
    const down = await runCli(home, ['down', 'early']);
    expect(down.code).toBe(0);
    expect(down.stdout).toBe('stopped instance early (SIGTERM: it was still starting)\n');
    const r = await up;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tether: the agent was stopped while starting \(SIGTERM: `tether down early`/);
    expect(isAlive(Number(readFileSync(loaded, 'utf8')))).toBe(false);
  });

  it('up stops an agent that never opens its control socket, even with a short --timeout', async () => {
    const key = join(home, 'plain_key_5');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    const { loaded: pidFile, nodeOptions } = hangAgent('hung');
    const args = ['up', 'hung', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '1'];
    const r = await runCli(home, args, 60_000, { NODE_OPTIONS: nodeOptions });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the agent did not open .*ha\.sock within 10s; .* \(agent stopped\)/);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(pid).toBeGreaterThan(0);
    expect(isAlive(pid)).toBe(false);
  });

  it('up says when nothing listens on the SSH port, and Ctrl-C stops the agent it started', async () => {
    const key = join(home, 'plain_key_4');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    let child: ChildProcess | undefined;
    const args = ['up', 'ctrlc', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '60'];
    const up = runCli(home, args, 60_000, {}, (c) => {
      child = c;
    });
    const paths = instancePaths('ctrlc', home);
    const detail = async () => {
      const r = await runCli(home, ['status', 'ctrlc', '--json']);
      return r.code === 0 ? (JSON.parse(r.stdout).requirements[0].detail as string | null) : null;
    };
    await waitFor(async () => (await detail())?.includes('ECONNREFUSED') === true, {
      what: 'requirement 1 showing the refused connect',
      timeoutMs: 20_000,
    });
    expect(await detail()).toMatch(
      /ECONNREFUSED 127\.0\.0\.1:1 \(nothing listens there: is the VM running, and is 1 the port it forwards to its sshd\?\); retrying$/,
    );
    const pid = readPid(paths) as number;
    expect(isAlive(pid)).toBe(true);
    child?.kill('SIGINT');
    const r = await up;
    expect(r.code).toBe(130);
    expect(r.stderr).toBe('tether: interrupted; stopping the agent of ctrlc (`tether up ctrlc` starts it again)\n');
    expect(isAlive(pid)).toBe(false);
    const status = JSON.parse((await runCli(home, ['status', 'ctrlc', '--json'])).stdout);
    expect(status.state).toBe('stopped');
    expect(status.stopReason).toMatch(/^tether up: interrupted/);
  });

  it('rm refuses a running instance, stops it first with --force, and forgets it', async () => {
    const key = join(home, 'plain_key_3');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'test', '-f', key]);
    const up = runCli(home, ['up', 'gone', '--ssh', 'dev@127.0.0.1:1', '-i', key, '--timeout', '60']);
    const paths = instancePaths('gone', home);
    await waitFor(() => existsSync(paths.socket) && readPid(paths) !== null, {
      what: 'the agent to serve its socket',
      timeoutMs: 20_000,
    });
    const pid = readPid(paths) as number;
    const refused = await runCli(home, ['rm', 'gone']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      'tether: instance gone is running; stop it with `tether down gone` first, or use --force\n',
    );
    expect(existsSync(paths.config)).toBe(true);
    expect(isAlive(pid)).toBe(true);

    const forced = await runCli(home, ['rm', '--force', 'gone']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toBe(`stopped instance gone (shut down)\nremoved instance gone (${paths.dir})\n`);
    expect(existsSync(paths.dir)).toBe(false);
    expect(isAlive(pid)).toBe(false);
    expect((await up).code).toBe(1);
    const names = JSON.parse((await runCli(home, ['ls', '--json'])).stdout).map((i: { name: string }) => i.name);
    expect(names).not.toContain('gone');
    const again = await runCli(home, ['delete', 'gone']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^tether: no instance gone /);

    // What is left of an instance without its tether.yaml (logs, the pinned key) is removed too.
    mkdirSync(join(paths.dir, 'logs'), { recursive: true });
    writeFileSync(join(paths.dir, 'known_hosts'), '');
    const leftover = await runCli(home, ['rm', 'gone']);
    expect(leftover.code).toBe(0);
    expect(leftover.stdout).toBe(`removed instance gone (${paths.dir})\n`);
    expect(existsSync(paths.dir)).toBe(false);
    // A directory of that name with nothing of an instance in it is not tether's to remove.
    mkdirSync(join(paths.dir, 'src'), { recursive: true });
    const foreign = await runCli(home, ['rm', 'gone']);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/has no tether\.yaml, .*not a tether instance, not removed/);
    expect(existsSync(join(paths.dir, 'src'))).toBe(true);
  });
});
