// The agent wiring of mounts: runAgent with a configured mount runs requirement 5 (guest mount requirements, then
// the mount), reports the mount in status, and unmounts on stop; a mount that cannot be made fails requirement 5
// while the agent serves forwards degraded, and is made once the guest or host lacks nothing.
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type HostAgent, runAgent } from '../host/src/agent/index.js';
import { testConfig } from './helpers/forward-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

function loginIds(user: string): { uid: number; gid: number } {
  const fields = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === user);
  if (!fields) throw new Error(`no user ${user}`);
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** A mount point under the testbed's state directory, owned by the guest login user (as sshfs needs it). */
function guestMountPoint(tb: Testbed, name: string): string {
  const mountPoint = join(tb.stateDir, name);
  mkdirSync(mountPoint, { recursive: true });
  const { uid, gid } = loginIds(tb.user);
  chownSync(mountPoint, uid, gid);
  return mountPoint;
}

/** An agent with one writable mount of a new host directory that holds `files`, under way (await `ready`). */
async function agentWithMount(tb: Testbed, name: string, files: Record<string, string> = {}, inotify = false) {
  const location = mkdtempSync(join(tmpdir(), `tether-agent-${name}-`));
  for (const [file, text] of Object.entries(files)) writeFileSync(join(location, file), text);
  const mountPoint = guestMountPoint(tb, `agent-mnt-${name}`);
  const instanceDir = mkdtempSync(join(tmpdir(), 'tether-agent-mounts-'));
  const config = testConfig(tb, { mounts: [{ location, mountPoint, writable: true, inotify }] });
  const { agent, ready } = await runAgent(name, config, { instanceDir, requirementTimeoutMs: 60_000 });
  return { location, mountPoint, instanceDir, agent, ready };
}

/** Stops the agent and the guest agent it started (pid, when known); removes the host directories. */
async function stopAll(tb: Testbed, agent: HostAgent, pid: number | undefined, dirs: string[] = []): Promise<void> {
  await agent.stop('test finished');
  if (pid) await tb.exec(`kill -TERM ${pid} 2>/dev/null; true`);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}

describe.skipIf(!canRunTestbed())('host agent mounts', () => {
  const testbed = useTestbed();

  it('mounts a configured directory as boot requirement 5 and unmounts on stop', async () => {
    const tb = testbed();
    const { location, mountPoint, instanceDir, agent, ready } = await agentWithMount(tb, 'mounts', {
      'hello.txt': 'from the host\n',
    });
    let pid: number | undefined;
    try {
      await ready;
      pid = agent.link.info?.pid;
      const status = agent.status();
      expect(status.requirements.map((r) => `${r.index}/${r.total} ${r.name} ${r.state}`)).toEqual([
        '1/5 ssh reachable ok',
        '2/5 host key ok',
        '3/5 guest agent provisioned ok',
        '4/5 guest agent running ok',
        '5/5 mounts ready ok',
      ]);
      expect(agent.mounts().map((m) => [m.mountPoint, m.state])).toEqual([[mountPoint, 'mounted']]);
      expect(status.mounts.mounted).toBe(1);
      const r = await tb.exec(`cat ${mountPoint}/hello.txt`, { user: tb.user });
      expect(r.stdout).toBe('from the host\n');
    } finally {
      await stopAll(tb, agent, pid);
    }
    const after = await tb.exec(`grep -c ' ${mountPoint} ' /proc/mounts || true`);
    expect(after.stdout.trim()).toBe('0');
    rmSync(location, { recursive: true, force: true });
    rmSync(instanceDir, { recursive: true, force: true });
  });

  it('propagates host edits to a guest watcher through the agent link and leaves the host files their times', async () => {
    const tb = testbed();
    const { location, mountPoint, instanceDir, agent, ready } = await agentWithMount(
      tb,
      'times',
      { 'dated.txt': 'x' },
      true,
    );
    let pid: number | undefined;
    const seen: string[] = [];
    const script =
      "require('fs').watch(process.argv[1],{recursive:true},(e,f)=>console.log(e+' '+f));console.log('ready')";
    let watcher: ReturnType<Testbed['spawn']> | undefined;
    try {
      await ready;
      pid = agent.link.info?.pid;
      // Started on the mount, not on the directory under it.
      watcher = tb.spawn('node', ['-e', script, mountPoint], { user: tb.user });
      // What the guest agent offers reaches the mounts whole: the marker touch keeps host times.
      expect(agent.link.info?.caps).toContain('fs.marker-touch');
      watcher.stdout?.setEncoding('utf8').on('data', (d: string) => seen.push(...d.split('\n').filter(Boolean)));
      await waitFor(() => seen.includes('ready'), { what: 'the guest watcher' });
      const dated = join(location, 'dated.txt');
      const old = new Date('2020-05-05T05:05:05.123Z');
      utimesSync(dated, old, old);
      const datedTime = statSync(dated, { bigint: true }).mtimeNs;
      writeFileSync(join(location, 'new.txt'), 'new');
      const dirTime = statSync(location).mtimeMs;
      // Batches apply in order: once the guest sees the create, the earlier time change is applied too.
      await waitFor(() => seen.some((l) => l.endsWith(' new.txt')), {
        what: 'the guest to see new.txt',
        timeoutMs: 5_000,
      });
      expect(statSync(dated, { bigint: true }).mtimeNs).toBe(datedTime);
      expect(statSync(location).mtimeMs).toBe(dirTime);
      expect(agent.mounts()[0]).toMatchObject({ state: 'mounted', inotify: 'watching' });
    } finally {
      watcher?.kill('SIGTERM');
      await stopAll(tb, agent, pid, [location, instanceDir]);
    }
  });

  it('fails requirement 5 naming the key when a host directory is missing, serves forwards degraded, and mounts once it exists', async () => {
    const tb = testbed();
    const location = join(tmpdir(), `tether-missing-export-${process.pid}`); // does not exist on the host yet
    rmSync(location, { recursive: true, force: true });
    const mountPoint = guestMountPoint(tb, 'agent-mnt-missing');
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-agent-mounts-'));
    const guestPort = await freePort();
    const config = testConfig(tb, {
      mounts: [{ location, mountPoint, inotify: false }],
      portForwards: [{ guestPort, static: true }],
    });
    const { agent, ready } = await runAgent('mountfail', config, { instanceDir, requirementTimeoutMs: 60_000 });
    let pid: number | undefined;
    try {
      await ready; // the agent runs on without the mount
      pid = agent.link.info?.pid;
      const status = agent.status();
      expect(status.state).toBe('degraded');
      expect(status.requirements[4]).toMatchObject({
        state: 'failed',
        detail: `0 of 1 mounted; ${mountPoint}: host directory ${location}: mounts[0].location ${location} does not exist on the host`,
      });
      expect(agent.mounts()[0]).toMatchObject({ state: 'error', error: expect.stringContaining(location) });
      // Forwarding is not held up by the mount.
      await waitFor(
        () => agent.forwards().some((f) => f.guestAddr.endsWith(`:${guestPort}`) && f.state === 'forwarding'),
        {
          what: `static forward of ${guestPort}`,
        },
      );

      mkdirSync(location);
      writeFileSync(join(location, 'late.txt'), 'made after up\n');
      await waitFor(() => agent.status().state === 'ready', {
        what: 'agent ready once the directory exists',
        timeoutMs: 30_000,
      });
      expect(agent.status().requirements[4].state).toBe('ok');
      expect(agent.mounts()[0].state).toBe('mounted');
      const r = await tb.exec(`cat ${mountPoint}/late.txt`, { user: tb.user });
      expect(r.stdout).toBe('made after up\n');
    } finally {
      await stopAll(tb, agent, pid, [instanceDir, location]);
    }
  });

  it('fails requirement 5 again when a mount cannot be made after a reconnect, and is ready again once it can', async () => {
    const tb = testbed();
    const { location, mountPoint, instanceDir, agent, ready } = await agentWithMount(tb, 'mountagain');
    let pid: number | undefined;
    try {
      await ready;
      pid = agent.link.info?.pid;
      expect(agent.status().state).toBe('ready');
      await tb.stopSshd();
      await waitFor(() => agent.mounts()[0].state === 'suspended', { what: 'the mount suspended', timeoutMs: 60_000 });
      rmSync(location, { recursive: true, force: true }); // what the mount needs is gone when SSH comes back
      await tb.startSshd();
      // (Degraded already while the guest agent link was down: requirement 5 is what tells the mount failed.)
      await waitFor(() => agent.status().requirements[4].state === 'failed', {
        what: 'requirement 5 failed',
        timeoutMs: 60_000,
      });
      expect(agent.mounts().map((m) => m.state)).toEqual(['error']);
      const r5 = agent.status().requirements[4];
      expect(r5.detail?.startsWith(`0 of 1 mounted; ${mountPoint}: `)).toBe(true);
      await waitFor(() => agent.link.up, { what: 'the guest agent link up again', timeoutMs: 60_000 });
      expect(agent.status().state).toBe('degraded');

      mkdirSync(location);
      writeFileSync(join(location, 'back.txt'), 'mounted again\n');
      await waitFor(() => agent.status().state === 'ready', { what: 'the agent ready again', timeoutMs: 60_000 });
      expect(agent.status().requirements[4].state).toBe('ok');
      expect((await tb.exec(`cat ${mountPoint}/back.txt`, { user: tb.user })).stdout).toBe('mounted again\n');
    } finally {
      await stopAll(tb, agent, pid, [instanceDir, location]);
    }
  });

  it('is not ready again after a reconnect until its mount is remounted', async () => {
    const tb = testbed();
    const { location, mountPoint, instanceDir, agent, ready } = await agentWithMount(tb, 'remount', {
      'still.txt': 'still here\n',
    });
    let pid: number | undefined;
    // The mount states at each moment the agent said `ready`.
    const atReady: string[][] = [];
    agent.on('event', (e: { type: string; state?: string }) => {
      if (e.type === 'status' && e.state === 'ready') atReady.push(agent.mounts().map((m) => m.state));
    });
    try {
      await ready;
      pid = agent.link.info?.pid;
      await tb.stopSshd();
      await waitFor(() => agent.status().state === 'degraded', { what: 'the agent degraded', timeoutMs: 60_000 });
      await tb.startSshd();
      await waitFor(() => agent.status().state === 'ready', { what: 'the agent ready again', timeoutMs: 60_000 });
      expect(atReady.length).toBeGreaterThan(0);
      expect(atReady).toEqual(atReady.map(() => ['mounted']));
      expect(agent.status().mounts.mounted).toBe(1);
      expect((await tb.exec(`cat ${mountPoint}/still.txt`, { user: tb.user })).stdout).toBe('still here\n');
    } finally {
      await stopAll(tb, agent, pid, [instanceDir, location]);
    }
  });

  it('mounts the mounts it can when another one cannot be made: each shows its own state and reason', async () => {
    const tb = testbed();
    const good = mkdtempSync(join(tmpdir(), 'tether-agent-good-'));
    writeFileSync(join(good, 'good.txt'), 'mounted beside a broken one\n');
    const missing = join(tmpdir(), `tether-missing-second-${process.pid}`); // does not exist on the host yet
    rmSync(missing, { recursive: true, force: true });
    const goodPoint = guestMountPoint(tb, 'agent-mnt-good');
    const badPoint = guestMountPoint(tb, 'agent-mnt-bad');
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-agent-mounts-'));
    const config = testConfig(tb, {
      mounts: [
        { location: good, mountPoint: goodPoint, writable: true, inotify: false },
        { location: missing, mountPoint: badPoint, inotify: false },
      ],
    });
    const { agent, ready } = await runAgent('mountsome', config, { instanceDir, requirementTimeoutMs: 60_000 });
    let pid: number | undefined;
    const why = `host directory ${missing}: mounts[1].location ${missing} does not exist on the host`;
    try {
      await ready;
      pid = agent.link.info?.pid;
      const status = agent.status();
      expect(status.state).toBe('degraded');
      expect(status.requirements[4]).toMatchObject({ state: 'failed', detail: `1 of 2 mounted; ${badPoint}: ${why}` });
      expect(agent.mounts().map((m) => [m.mountPoint, m.state, m.error])).toEqual([
        [goodPoint, 'mounted', null],
        [badPoint, 'error', why],
      ]);
      const r = await tb.exec(`cat ${goodPoint}/good.txt`, { user: tb.user });
      expect(r.stdout).toBe('mounted beside a broken one\n');
      // The last errors name the mount and say why.
      const lastErrors = status.lastErrors.map((e) => `[${e.component}] ${e.msg}`);
      expect(lastErrors).toContain(`[mount] mount ${badPoint} error: ${why}`);

      // The broken one is tried again by itself, and the good one stays mounted meanwhile.
      mkdirSync(missing);
      writeFileSync(join(missing, 'late.txt'), 'made after up\n');
      await waitFor(() => agent.status().state === 'ready', {
        what: 'agent ready once the second directory exists',
        timeoutMs: 30_000,
      });
      expect(agent.mounts().map((m) => m.state)).toEqual(['mounted', 'mounted']);
      // The mount's error is history now, and status says so; nothing is left unresolved.
      const after = agent.status().lastErrors;
      expect(after.find((e) => e.msg === `mount ${badPoint} error: ${why}`)?.resolvedAt).toEqual(expect.any(String));
      expect(after.filter((e) => e.resolvedAt === null)).toEqual([]);
      expect((await tb.exec(`cat ${badPoint}/late.txt`, { user: tb.user })).stdout).toBe('made after up\n');
      expect((await tb.exec(`cat ${goodPoint}/good.txt`, { user: tb.user })).stdout).toBe(
        'mounted beside a broken one\n',
      );
    } finally {
      await stopAll(tb, agent, pid, [instanceDir, good, missing]);
    }
  });
});
