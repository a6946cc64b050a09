// The tether CLI end to end against the testbed (real sshd in a namespace, the guest agent provisioned by `up`):
// up with progress lines, forward ls --json showing a guest web server with exactly the contract keys, forward
// add/rm, logs -n, status --json, doctor healthy and with a broken guest agent, down leaving nothing behind, and an up
// whose mount cannot be made (exit 1, the agent serving on degraded).

import { once } from 'node:events';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../host/src/cli/agent-spawn.js';
import { isAlive } from '../host/src/instance.js';
import { FORWARD_JSON_KEYS } from '../host/src/model.js';
import { cliBuilt, runCli, writeTestbedConfig } from './helpers/cli-helpers.js';
import { canRunTestbed, type Testbed, testbedConfigInput, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

const NAME = 'e2e';
const haveGuestBuild = existsSync(new URL('../build/guest/manifest.json', import.meta.url));

async function httpStatus(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  await res.arrayBuffer();
  return res.status;
}

async function refused(port: number): Promise<boolean> {
  try {
    await httpStatus(port);
    return false;
  } catch {
    return true;
  }
}

describe.skipIf(!canRunTestbed() || !cliBuilt() || !haveGuestBuild)('tether CLI end to end', () => {
  const testbed = useTestbed();
  const home = mkdtempSync(join(tmpdir(), 'tether-cli-e2e-'));
  const cli = (...args: string[]) => runCli(home, args, 120_000);
  let tb: Testbed;
  let installDir: string;
  let guestPort: number;
  let agentPid: number;

  beforeAll(() => {
    tb = testbed();
    installDir = join(tb.guestDir, 'install');
  });

  afterAll(async () => {
    if (existsSync(join(home, NAME, 'ha.sock'))) await cli('down', NAME);
    if (installDir && existsSync(installDir)) chmodSync(installDir, 0o755);
    const guestPid = guestAgentPid();
    if (guestPid && isAlive(guestPid)) process.kill(guestPid, 'SIGTERM');
    rmSync(home, { recursive: true, force: true });
  });

  function guestAgentPid(): number | null {
    try {
      return Number(readFileSync(join(installDir, 'agent.pid'), 'utf8').trim()) || null;
    } catch {
      return null;
    }
  }

  it('up creates the instance, shows each requirement and exits 0 when ready', async () => {
    const config = writeTestbedConfig(join(home, 'e2e.yaml'), tb, { guestAgent: { installDir } });
    const r = await cli('up', NAME, '-c', config, '--timeout', '90');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`created instance ${NAME}: ${join(home, NAME, 'tether.yaml')} (from ${config})\n`);
    expect(r.stdout).toMatch(/\[\s*\d+\.\ds\] waiting for requirement 1 of 4: ssh reachable/);
    // Requirement 3 says what it is doing while it waits.
    expect(r.stdout).toMatch(
      /waiting for requirement 3 of 4: guest agent provisioned \(waiting for tether-guest to answer on /,
    );
    expect(r.stdout).toMatch(/✓ requirement 2 of 4: host key \(\d+\.\ds\)/);
    expect(r.stdout).toMatch(/✓ requirement 3 of 4: guest agent provisioned \(\d+\.\ds\) uploaded tether-guest\.cjs/);
    expect(r.stdout).toMatch(/✓ requirement 4 of 4: guest agent running/);
    expect(r.stdout).not.toMatch(/mounts ready/); // `mounts: []`: no mount requirement
    expect(r.stdout).toMatch(/✓ instance e2e is ready/);
    const sock = join(home, NAME, 'ha.sock');
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(statSync(join(home, NAME)).mode & 0o777).toBe(0o700);
    agentPid = Number(readFileSync(join(home, NAME, 'ha.pid'), 'utf8'));
    expect(isAlive(agentPid)).toBe(true);
    // The background agent runs with the flags and malloc settings the forwarding figures were measured with.
    const argv = readFileSync(`/proc/${agentPid}/cmdline`, 'utf8').split('\0');
    for (const flag of AGENT_NODE_FLAGS) expect(argv).toContain(flag);
    const env = readFileSync(`/proc/${agentPid}/environ`, 'utf8').split('\0');
    for (const [k, v] of Object.entries(AGENT_ENV)) expect(env).toContain(`${k}=${v}`);
    expect(argv).toContain('--timeout'); // up's --timeout is the agent's requirement deadline too
  });

  it('up and doctor say when the running agent is another build of tether than the command (rebuilt since)', async () => {
    const buildFile = new URL('../host/dist/build.json', import.meta.url);
    const real = readFileSync(buildFile, 'utf8');
    const running = JSON.parse(real).build;
    // The command is rebuilt while the agent runs: its build file says so; the agent keeps the build it started with.
    writeFileSync(buildFile, `${JSON.stringify({ build: '0123456789abcdef' })}\n`);
    try {
      const up = await cli('up', NAME);
      expect(up.code).toBe(0);
      expect(up.stdout).toContain(
        `the agent runs another build of tether (${running}) than this command (0123456789abcdef): it was started ` +
          `before tether was rebuilt or upgraded; \`tether down ${NAME} && tether up ${NAME}\` runs this one`,
      );
      const doctor = await cli('doctor', NAME);
      expect(doctor.stdout).toMatch(/^! host agent build: the agent runs another build of tether/m);
      expect(doctor.stdout).toContain(`fix: tether down ${NAME} && tether up ${NAME}`);
    } finally {
      writeFileSync(buildFile, real);
    }
    expect((await cli('up', NAME)).stdout).not.toContain('another build');
  });

  it('up on a running instance says so, and says when its flags changed tether.yaml', async () => {
    const same = await cli('up', NAME);
    expect(same.code).toBe(0);
    expect(same.stdout).toMatch(/instance e2e is already running/);
    expect(same.stdout).not.toMatch(/changed/);
    // Its boot is not replayed: those lines would claim what may no longer hold.
    expect(same.stdout).not.toMatch(/requirement \d of/);
    expect(same.stdout).toMatch(/✓ instance e2e is ready/);
    expect(same.stdout).not.toMatch(/--log-level/);
    const level = await cli('up', NAME, '--log-level', 'debug');
    expect(level.stdout).toContain(
      `--log-level debug applies from the agent's next start: \`tether down ${NAME} && tether up ${NAME} --log-level debug\``,
    );
    // Saved again after the agent read it, or given a comment: the config it runs with is still the file's.
    const config = join(home, NAME, 'tether.yaml');
    const original = readFileSync(config, 'utf8');
    writeFileSync(config, `${original}# a comment\n`);
    expect((await cli('up', NAME)).stdout).not.toMatch(/changed/);
    // Edited by hand after the agent read it: said as well.
    expect(original).toMatch(/^ {2}useAgent: false$/m);
    writeFileSync(config, original.replace(/^ {2}useAgent: false$/m, '  useAgent: false\n  keepaliveInterval: 11'));
    const applies = /tether\.yaml changed since the agent started; it applies after `tether down e2e && tether up e2e`/;
    expect((await cli('up', NAME)).stdout).toMatch(applies);
    // status and doctor say it too; doctor checks what the agent runs with.
    expect((await cli('status', NAME)).stdout).toMatch(applies);
    const doctor = await cli('doctor', NAME);
    expect(doctor.stdout).toMatch(/! config: .*tether\.yaml is valid but is not what the running agent started with/);
    const changed = await cli('up', NAME, '--ssh', `${tb.user}@localhost:${tb.sshPort}`);
    expect(changed.code).toBe(0);
    expect(changed.stdout).toMatch(applies);
    expect((await cli('up', NAME, '--ssh', `${tb.user}@127.0.0.1:${tb.sshPort}`)).stdout).toMatch(/changed/);
  });

  it('forward ls --json shows a server started in the guest, with exactly the contract keys', async () => {
    guestPort = await freePort();
    tb.spawn('/usr/bin/python3', ['-m', 'http.server', String(guestPort), '--bind', '127.0.0.1'], { user: tb.user });
    const entry = await waitFor(
      async () => {
        const r = await cli('forward', 'ls', NAME, '--json');
        const list = JSON.parse(r.stdout) as Record<string, unknown>[];
        return list.find((f) => f.guestAddr === `127.0.0.1:${guestPort}` && f.state === 'forwarding');
      },
      { what: `forward ls to show guest port ${guestPort}`, timeoutMs: 20_000, intervalMs: 200 },
    );
    expect(Object.keys(entry)).toEqual([...FORWARD_JSON_KEYS]);
    expect(entry).toMatchObject({
      proto: 'tcp',
      hostAddrs: [`127.0.0.1:${guestPort}`, `[::1]:${guestPort}`],
      error: null,
      process: { pid: expect.any(Number), command: expect.stringContaining('http.server') },
    });
    expect(new Date(entry.since as string).toISOString()).toBe(entry.since);
    expect(await httpStatus(guestPort)).toBe(200);
    const table = await cli('forward', 'ls', NAME);
    expect(table.stdout).toMatch(
      new RegExp(
        `tcp\\s+127\\.0\\.0\\.1:${guestPort}\\s+127\\.0\\.0\\.1:${guestPort}, \\[::1\\]:${guestPort}\\s+forwarding`,
      ),
    );
  });

  it('forward add and rm change what the host serves', async () => {
    const hostPort = await freePort();
    const add = await cli('forward', 'add', NAME, `${hostPort}:${guestPort}`);
    expect(add.code).toBe(0);
    expect(add.stdout).toMatch(new RegExp(`added tcp 127\\.0\\.0\\.1:${hostPort}`));
    await waitFor(async () => (await httpStatus(hostPort)) === 200, { what: `host port ${hostPort} to serve` });
    // The guest serves that port: nothing to add.
    expect(add.stdout).not.toMatch(/nothing listens/);
    const idlePort = await freePort();
    const idle = await cli('forward', 'add', NAME, String(idlePort));
    expect(idle.code).toBe(0);
    expect(idle.stdout).toContain(
      `  nothing listens on guest port ${idlePort} yet: connections to it are reset until something does\n`,
    );
    expect((await cli('forward', 'rm', NAME, String(idlePort))).code).toBe(0);
    const twice = await cli('forward', 'add', NAME, `${hostPort}:${guestPort}`);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/already exists \(runtime\)/);
    const rm = await cli('forward', 'rm', NAME, String(hostPort));
    expect(rm.code).toBe(0);
    expect(rm.stdout).toMatch(/removed tcp/);
    // The detected forward of the guest port served its own host port all along: nothing to say of it.
    expect(rm.stdout).not.toMatch(/forwarded again as detected/);
    await waitFor(() => refused(hostPort), { what: `host port ${hostPort} to close` });
    const again = await cli('forward', 'rm', NAME, String(hostPort));
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(new RegExp(`no forward matches ${hostPort}`));
    // An id cut at its `->` by the shell (an unquoted redirect), among other arguments: the hint, and nothing removed.
    const cut = await cli('forward', 'rm', NAME, `tcp/127.0.0.1:${guestPort}-`, String(guestPort));
    expect(cut.code).toBe(1);
    expect(cut.stderr).toContain(
      `no forward matches tcp/127.0.0.1:${guestPort}-; an id with -> must be quoted, e.g. 'tcp/127.0.0.1:${guestPort}->PORT'; nothing was removed`,
    );
    expect(await httpStatus(guestPort)).toBe(200);

    // Added on the guest port's own host port, it replaces the detected forward; removed, the detected one is back,
    // and rm says so.
    const same = await cli('forward', 'add', NAME, `${guestPort}:${guestPort}`);
    expect(same.code).toBe(0);
    const rmSame = await cli('forward', 'rm', NAME, `${guestPort}:${guestPort}`);
    expect(rmSame.code).toBe(0);
    expect(rmSame.stdout).toMatch(/forwarded again as detected \(forwarding\)/);
    expect(await httpStatus(guestPort)).toBe(200);
  });

  it('forward add of a port the guest serves only on another address names the spec that reaches it', async () => {
    const port = await freePort();
    const server = tb.spawn('/usr/bin/python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.2'], {
      user: tb.user,
    });
    try {
      await waitFor(async () => (await cli('forward', 'ls', NAME)).stdout.includes(`127.0.0.2:${port}`), {
        what: `guest listener 127.0.0.2:${port} listed`,
      });
      const add = await cli('forward', 'add', NAME, String(port));
      expect(add.code).toBe(0);
      expect(add.stdout).toContain(
        `the guest listens on 127.0.0.2:${port}, not on 127.0.0.1:${port}: \`tether forward rm ${NAME} ${port}\` and ` +
          `\`tether forward add ${NAME} ${port}:127.0.0.2:${port}\` reach it`,
      );
      expect((await cli('forward', 'rm', NAME, String(port))).code).toBe(0);
      const direct = await cli('forward', 'add', NAME, `${port}:127.0.0.2:${port}`);
      expect(direct.stdout).not.toContain('the guest listens on');
      await waitFor(async () => (await httpStatus(port)) === 200, { what: `host port ${port} to reach 127.0.0.2` });
      expect((await cli('forward', 'rm', NAME, String(port))).code).toBe(0);
    } finally {
      server.kill();
    }
  });

  it('forward add --socket to a guest socket that is not there says so at once (exit 0: it serves once the socket is there), and forward ls keeps saying it', async () => {
    const guestSocket = join(tb.guestDir, 'missing.sock');
    const hostSocket = join(home, 'missing-h.sock');
    const add = await cli('forward', 'add', NAME, '--socket', `${guestSocket}:${hostSocket}`);
    // Added and waiting for its guest service, as a host port in conflict waits for the port: nobody needs to act.
    expect(add.code).toBe(0);
    expect(add.stdout).toContain(
      `added unix ${hostSocket} → guest ${guestSocket} (error: guest socket ${guestSocket} does not exist`,
    );
    expect(add.stdout).toContain('the host socket is closed until the service is back');
    expect(add.stderr).toBe('');
    const ls = JSON.parse((await cli('forward', 'ls', NAME, '--json')).stdout) as { guestAddr: string }[];
    expect(ls.find((f) => f.guestAddr === guestSocket)).toMatchObject({
      state: 'error',
      error: expect.stringContaining(`guest socket ${guestSocket} does not exist`),
    });
    expect((await cli('forward', 'rm', NAME, hostSocket)).code).toBe(0);
  });

  it('logs -n prints the last lines, pretty or JSON, filtered by component', async () => {
    const pretty = await cli('logs', NAME, '-n', '5');
    expect(pretty.code).toBe(0);
    expect(pretty.stdout.trim().split('\n')).toHaveLength(5);
    expect(pretty.stdout).toMatch(/(INFO|WARN|DEBUG|ERROR): \[\w+\] /);
    const json = await cli('logs', NAME, '-n', '3', '--json', '--component', 'provision');
    const lines = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l.component).toBe('provision');
    // The agent's own state changes are logged too, with where they came from.
    const agent = await cli('logs', NAME, '-n', '50', '--component', 'agent');
    expect(agent.stdout).toMatch(/host agent ready \(was starting\)/);
  });

  it('status --json reports a connected, ready agent', async () => {
    const r = await cli('status', NAME, '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ name: NAME, state: 'ready', pid: agentPid, ssh: { state: 'connected' } });
    expect(s.guest.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.requirements.map((q: { state: string }) => q.state)).toEqual(['ok', 'ok', 'ok', 'ok']);
    // The keys a stopped instance's status has too, with what they are while it runs.
    expect(s).toMatchObject({ stopReason: null, link: { provisioning: false }, forwards: { capped: 0 } });
    // The build of the host code it runs: this checkout's.
    const built = JSON.parse(readFileSync(new URL('../host/dist/build.json', import.meta.url), 'utf8')).build;
    expect(s.build).toMatch(/^[0-9a-f]{16}$/);
    expect(s.build).toBe(built);
    // ls counts forwards out of those not ignored (the guest's sshd port is, by default).
    const f = s.forwards as { total: number; forwarding: number; ignored: number };
    expect(f.ignored).toBeGreaterThan(0);
    const row = JSON.parse((await cli('ls', '--json')).stdout).find((i: { name: string }) => i.name === NAME);
    expect(row.forwards).toEqual({ total: f.total, forwarding: f.forwarding, ignored: f.ignored });
    const line = new RegExp(`^${NAME} +\\S+ +ready +${f.forwarding}/${f.total - f.ignored} `, 'm');
    expect((await cli('ls')).stdout).toMatch(line);
  });

  it('doctor of a second instance of the same VM names the instance that serves it already', async () => {
    const spare = join(home, 'spare');
    mkdirSync(spare);
    copyFileSync(join(home, NAME, 'tether.yaml'), join(spare, 'tether.yaml'));
    try {
      const r = await cli('doctor', 'spare');
      // Stopped, the spare is no conflict yet: a warning, and the fix says which instance to use.
      expect(r.stdout).toMatch(
        new RegExp(
          `^! other instances: instance ${NAME} \\(pid ${agentPid}\\) runs against \\S+@127\\.0\\.0\\.1:.*; starting this one too would compete with it`,
          'm',
        ),
      );
      expect(r.stdout).toMatch(
        new RegExp(`^ {4}fix: use ${NAME}, or tether down ${NAME} before tether up spare$`, 'm'),
      );
      expect(r.stdout).toMatch(/^✗ host agent: not running/m);
      expect(r.code).toBe(1);
      // up says so before it starts the second agent; which serves (its forwards find their ports taken).
      const up = await cli('up', 'spare', '--timeout', '60');
      expect(up.stderr).toMatch(
        new RegExp(`^tether: warning: instance ${NAME} \\(pid ${agentPid}\\) runs against \\S+, the same VM: `, 'm'),
      );
      expect((await cli('down', 'spare')).code).toBe(0);
      expect(isAlive(agentPid)).toBe(true);
    } finally {
      rmSync(spare, { recursive: true, force: true });
    }
  });

  it('doctor with a tether.yaml broken while the agent runs checks the link, ssh and guest with the config it runs with', async () => {
    const file = join(home, NAME, 'tether.yaml');
    const good = readFileSync(file, 'utf8');
    writeFileSync(file, `${good}\nssh: {}\n`);
    try {
      const r = await cli('doctor', NAME);
      expect(r.stdout).toMatch(/^✗ config: .*tether\.yaml:\d+:\d+: /m);
      expect(r.stdout).toMatch(/ {4}fix: edit \S+tether\.yaml; the running agent keeps the config it started with/);
      expect(r.stdout).toMatch(/^✓ host agent: running/m);
      // The agent's own config: SSH and the guest agent are checked as they are served.
      expect(r.stdout).toMatch(/^✓ ssh auth: logged in as /m);
      expect(r.stdout).toMatch(/^✓ guest agent: tether-guest \S+ pid \d+ answers on /m);
      expect(r.stdout).toMatch(/^✓ host ports: \d+ forwards?, none in conflict/m);
      expect(r.code).toBe(1);
      // status says the file does not load, rather than that a restart would apply it.
      const status = await cli('status', NAME);
      expect(status.stdout).toMatch(
        /^ {14}! \S+tether\.yaml changed since the agent started and does not load: \S+tether\.yaml:\d+:\d+: .*fix the file before `tether down e2e && tether up e2e`/m,
      );
    } finally {
      writeFileSync(file, good);
    }
  });

  it('a guest agent killed again right after its restart: status says when it comes back, doctor waits for it', async () => {
    const killed = async () => {
      const pid = guestAgentPid();
      expect(pid).not.toBeNull();
      process.kill(pid!, 'SIGKILL');
      await waitFor(() => !isAlive(pid!), { what: 'the guest agent to exit' });
      return pid!;
    };
    const first = await killed();
    await waitFor(
      async () => {
        const { link, guest } = JSON.parse((await cli('status', NAME, '--json')).stdout);
        return link.up && guest.agentPid !== first;
      },
      { what: 'the link to a new guest agent', timeoutMs: 30_000, intervalMs: 100 },
    );
    // Served a moment only: the next start waits out the interval meant for agents that crash at start.
    const second = await killed();
    const link = await waitFor(
      async () => {
        const s = JSON.parse((await cli('status', NAME, '--json')).stdout);
        return s.link.up === false && s.link.restartAt ? (s.link as { restartAt: string }) : null;
      },
      { what: 'status to show the link down with its restart time', timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(Date.parse(link.restartAt)).toBeGreaterThan(Date.now() - 3_000);
    expect(Date.parse(link.restartAt)).toBeLessThan(Date.now() + 6_000);
    const doctor = await cli('doctor', NAME);
    expect(doctor.stdout).toMatch(/✓ guest agent: tether-guest .* answers on /);
    expect(doctor.code).toBe(0);
    expect(guestAgentPid()).not.toBe(second);
    expect(JSON.parse((await cli('status', NAME, '--json')).stdout).link).toMatchObject({ up: true, restartAt: null });
  });

  it('doctor passes when healthy and names a broken guest agent', async () => {
    const healthy = await cli('doctor', NAME);
    expect(healthy.stdout).toMatch(/✓ other instances: none runs against /);
    expect(healthy.stdout).toMatch(/✓ guest agent: tether-guest .* answers on /);
    expect(healthy.stdout).toMatch(/✓ port scanner: scanning every \d+ ms/);
    expect(healthy.code).toBe(0);
    // The same checks for scripts: one JSON array, nothing else on stdout.
    const json = await cli('doctor', NAME, '--json');
    expect(json.code).toBe(0);
    const checks = JSON.parse(json.stdout) as { name: string; state: string; detail: string; fix: string | null }[];
    expect(checks.map((c) => c.name)).toEqual(
      healthy.stdout.split('\n').flatMap((l) => (/^[✓!✗-] ([^:]+):/.exec(l) ?? []).slice(1, 2)),
    );
    expect(checks.find((c) => c.name === 'port scanner')).toMatchObject({ state: 'ok', fix: null });

    // Break the link: kill the guest agent and make its install directory unusable so provisioning cannot restart it.
    const pid = guestAgentPid();
    expect(pid).not.toBeNull();
    chmodSync(installDir, 0o000);
    try {
      await brokenGuestAgent(pid!);
    } finally {
      // The tests after this one provision the guest again.
      chmodSync(installDir, 0o755);
    }
  });

  async function brokenGuestAgent(pid: number) {
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !isAlive(pid), { what: 'the guest agent to exit' });
    // Whenever doctor runs, a try to start the agent again under way included, it names what keeps it from starting.
    await waitFor(
      async () => JSON.parse((await cli('status', NAME, '--json')).stdout).link.provisionError?.includes(installDir),
      { what: 'the host agent to fail to start the guest agent', timeoutMs: 30_000, intervalMs: 200 },
    );
    const broken = await cli('doctor', NAME);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(
      /✗ guest agent: no answer on .*agent\.sock in the guest: .*; the host agent's last try to start it failed: .*Permission denied/,
    );
    expect(broken.stdout).toMatch(/ {4}fix: fix what the failure names; the host agent tries again by itself/);
    // The host agent itself is fine; what it lacks is its link to the guest agent, named with the reason.
    expect(broken.stdout).toMatch(/✓ host agent: running/);
    expect(broken.stdout).toMatch(/✗ guest agent link: the host agent is not connected to the guest agent: /);
    expect(broken.stdout).toMatch(/ {4}fix: /);
    expect(broken.stderr).toMatch(/^tether: \d+ problems?: .*guest agent/);
    const brokenJson = await cli('doctor', NAME, '--json');
    expect(brokenJson.code).toBe(1);
    expect(JSON.parse(brokenJson.stdout)).toContainEqual(
      expect.objectContaining({ name: 'guest agent link', state: 'fail', fix: expect.any(String) }),
    );

    // up on the running instance waits for the link rather than calling it ready, and says what it waits for.
    const up = await cli('up', NAME, '--timeout', '3');
    expect(up.stdout).toMatch(/already running/);
    expect(up.stdout).toMatch(/waiting for the link to the guest agent: /);
    expect(up.stderr).toMatch(/timed out waiting for the link to the guest agent: /);
    expect(up.code).toBe(1);
    expect(isAlive(agentPid)).toBe(true);
  }

  it('a stopped agent: status says it does not answer and how to stop it, ls lists it as not answering', async () => {
    process.kill(agentPid, 'SIGSTOP');
    try {
      const status = await cli('status', NAME);
      expect(status.code).toBe(1);
      expect(status.stderr).toContain(`instance ${NAME}: the agent does not answer on `);
      expect(status.stderr).toContain(`\`tether down ${NAME}\` stops it`);
      const ls = await cli('ls', '--json');
      // Its pid (from ha.pid) is there, as for a running one: it is what to look at, or to stop.
      expect(JSON.parse(ls.stdout)).toEqual([
        expect.objectContaining({ name: NAME, state: 'not answering', pid: agentPid }),
      ]);
    } finally {
      process.kill(agentPid, 'SIGCONT');
    }
    expect((await cli('status', NAME)).code).toBe(0);
  });

  it('down stops the agent and leaves no process and no socket behind', async () => {
    // A follower sees the stop as the end of what it follows, not as a failure.
    let out = '';
    const watching = runCli(home, ['forward', 'ls', NAME, '--watch', '--json'], 60_000, {}, (child) =>
      child.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
      }),
    );
    await waitFor(() => out.includes('\n'), { what: 'forward ls --watch to draw' });
    const r = await cli('down', NAME);
    expect(r.code).toBe(0);
    const watched = await watching;
    expect(watched.code).toBe(0);
    expect(watched.stderr).toContain('the agent stopped');
    expect(r.stdout).toMatch(/stopped instance e2e/);
    expect(isAlive(agentPid)).toBe(false);
    expect(existsSync(join(home, NAME, 'ha.sock'))).toBe(false);
    expect(existsSync(join(home, NAME, 'ha.pid'))).toBe(false);
    expect(await refused(guestPort)).toBe(true);
    const ls = await cli('ls', '--json');
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ name: NAME, state: 'stopped' })]);
    expect(JSON.parse((await cli('status', NAME, '--json')).stdout).stopReason).toBe(
      'tether down (shutdown via control API)',
    );
  });

  it('up --foreground serves until tether down, then says why it stopped and exits 0', async () => {
    let out = '';
    const foreground = runCli(home, ['up', NAME, '--foreground', '--timeout', '90'], 120_000, {}, (child) =>
      child.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
      }),
    );
    await waitFor(() => out.includes('running in the foreground'), { what: 'the foreground agent', timeoutMs: 90_000 });
    expect((await cli('down', NAME)).code).toBe(0);
    const r = await foreground;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^stopped instance e2e: tether down \(shutdown via control API\)$/m);
  });

  it('up exits 1 naming a mount the guest cannot take and leaves the agent serving degraded; up again once fixed mounts at once', async () => {
    const name = 'e2e-mount';
    const location = join(home, 'not-created'); // the host directory to mount does not exist
    const mountPoint = join(tb.stateDir, 'e2e-mnt'); // nor does the mount point, which the SSH user cannot create
    const config = writeTestbedConfig(join(home, 'e2e-mount.yaml'), tb, {
      guestAgent: { installDir },
      mounts: [{ location, mountPoint, inotify: false }],
    });
    const r = await cli('up', name, '-c', config, '--timeout', '90');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✓ requirement 4 of 5: guest agent running/);
    expect(r.stderr).toMatch(
      new RegExp(
        `^tether: requirement 5 of 5 \\(mounts ready\\) failed: 0 of 1 mounted; ${mountPoint}: host directory ${location}: .*; the agent keeps running degraded \\(pid \\d+, `,
      ),
    );
    const pid = Number(readFileSync(join(home, name, 'ha.pid'), 'utf8'));
    expect(isAlive(pid)).toBe(true);
    const status = JSON.parse((await cli('status', name, '--json')).stdout);
    expect(status.state).toBe('degraded');
    const mounts = JSON.parse((await cli('mount', 'ls', name, '--json')).stdout);
    expect(mounts).toEqual([expect.objectContaining({ state: 'error', error: expect.stringContaining(location) })]);

    // Fixed on the host, then `up` again: the running agent tries at once and is ready.
    mkdirSync(location);
    await tb.exec(`mkdir -p ${mountPoint} && chown ${tb.user} ${mountPoint}`);
    const again = await cli('up', name, '--timeout', '60');
    expect(again.stdout).toMatch(/trying its failed mounts again/);
    expect(again.stdout).toMatch(/✓ requirement 5 of 5: mounts ready/);
    expect(again.stdout).toMatch(/✓ instance e2e-mount is ready/);
    expect(again.code).toBe(0);
    expect(Number(readFileSync(join(home, name, 'ha.pid'), 'utf8'))).toBe(pid);

    const down = await cli('down', name);
    expect(down.code).toBe(0);
    expect(isAlive(pid)).toBe(false);
  });

  it('up is ready with a configured forward that cannot serve yet, and warns about it', async () => {
    const name = 'e2e-static';
    const missing = join(tb.guestDir, 'not-yet.sock');
    const config = writeTestbedConfig(join(home, 'e2e-static.yaml'), tb, {
      guestAgent: { installDir },
      portForwards: [{ guestSocket: missing, hostSocket: join(home, 'not-yet.sock') }],
    });
    // A guest server whose port another host program holds: its forward is in conflict.
    const port = await freePort();
    const holder = net.createServer().listen(port, '127.0.0.1');
    await once(holder, 'listening');
    const server = tb.spawn('/usr/bin/python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1'], {
      user: tb.user,
    });
    try {
      await waitFor(async () => (await tb.exec(`ss -Htln 'sport = :${port}'`)).stdout.includes('LISTEN'), {
        what: `guest server on ${port}`,
      });
      const r = await cli('up', name, '-c', config);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/✓ instance e2e-static is ready/);
      expect(r.stderr).toContain(`tether: warning: forward unix ${join(home, 'not-yet.sock')} → guest ${missing} `);
      expect(r.stderr).toMatch(/from tether.yaml: error \(guest socket .* does not exist/);
      expect(r.stderr).toContain(
        `tether: warning: 1 guest listener not forwarded on every host address: tcp 127.0.0.1:${port} conflict; ` +
          `\`tether forward ls ${name}\` says why`,
      );
    } finally {
      server.kill();
      holder.close();
      expect((await cli('down', name)).code).toBe(0);
    }
  });

  it('up is ready without the default mount of ~ when the guest cannot take it, and says why', async () => {
    const name = 'e2e-default';
    // No `mounts:` key: the default mount of the host's ~, here a directory that exists in the guest (the testbed
    // shares the host's file system) and is not the SSH user's, like /root for a host agent run as root.
    const hostHome = mkdtempSync(join(tmpdir(), 'tether-e2e-home-'));
    const { mounts: _, ...input } = testbedConfigInput(tb, { guestAgent: { installDir } });
    const config = join(home, 'e2e-default.yaml');
    writeFileSync(config, stringify(input));
    const asUser = (...args: string[]) => runCli(home, args, 120_000, { HOME: hostHome });
    try {
      const r = await asUser('up', name, '-c', config, '--timeout', '90');
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(
        new RegExp(
          `- requirement 5 of 5: mounts ready \\(skipped: the default mount of ~ is not made: .*${hostHome} exists in the guest and is not the SSH user's to mount on; set the mount's mountPoint`,
        ),
      );
      expect(r.stdout).toMatch(/✓ instance e2e-default is ready/);
      expect(r.code).toBe(0);
      const status = JSON.parse((await asUser('status', name, '--json')).stdout);
      expect(status.state).toBe('ready');
      const mounts = JSON.parse((await asUser('mount', 'ls', name, '--json')).stdout);
      expect(mounts).toEqual([expect.objectContaining({ mountPoint: hostHome, state: 'error' })]);
      // The instance is ready without it: its failure is a warning in the log, not an error.
      const logged = await asUser('logs', name, '-n', '200', '--json', '--component', 'mount');
      const lines = logged.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { level: number; msg: string });
      expect(lines.find((l) => l.msg.startsWith(`mount ${hostHome} error:`))?.level).toBe(40);
      const doctor = await asUser('doctor', name);
      expect(doctor.stdout).toMatch(new RegExp(`! mount point ${hostHome}: `));
      // Said once, by the requirement with its fix, not again as a mount in error.
      expect(doctor.stdout).not.toMatch(new RegExp(`! mount ${hostHome}: .* is error: `));
      expect(doctor.code).toBe(0);
    } finally {
      expect((await asUser('down', name)).code).toBe(0);
      rmSync(hostHome, { recursive: true, force: true });
    }
  });
});
