// The host agent's resilience against the testbed: host key trust on first use and refusal of a changed key, SSH
// loss (guest sshd stopped and started again) and a guest agent killed with SIGKILL: forwards come back by
// themselves, and a TCP connection open through a forward survives the agent restart (channels belong to SSH).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent, type HostAgentOptions } from '../host/src/agent/index.js';
import { Config } from '../host/src/config/schema.js';
import { silentLogger } from '../host/src/log.js';
import type { AgentEvent } from '../host/src/model.js';
import { guestServer, type Harness, roundTrip, startAgent, stopChild, testConfig } from './helpers/forward-fixture.js';
import { canRunTestbed, testbedConfigInput, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

function sshString(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

describe.skipIf(!canRunTestbed())('host agent resilience', () => {
  const testbed = useTestbed();
  let h: Harness;

  beforeAll(async () => {
    h = await startAgent(testbed());
  });
  afterAll(async () => {
    await h?.stop();
  });

  const state = (id: string) => h.agent.forwards().find((f) => f.id === id)?.state;

  it('pins the host key on first use and records the boot requirements', () => {
    const pinned = readFileSync(join(h.instanceDir, 'host_key'), 'utf8').trim().split(' ');
    expect(pinned[0]).toBe('ssh-ed25519');
    expect(pinned[2]).toBe(testbed().hostKeyFingerprint);
    const status = h.agent.status();
    expect(status.state).toBe('ready');
    expect(status.requirements.map((r) => [r.name, r.state])).toEqual([
      ['ssh reachable', 'ok'],
      ['host key', 'ok'],
      ['guest agent provisioned', 'ok'],
      ['guest agent running', 'ok'],
    ]);
    expect(status.guest?.agentPid).toBeGreaterThan(0);
  });

  it('refuses a changed host key with both fingerprints, stops trying, and connects once the pin is deleted', async () => {
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-hostkey-'));
    const fake = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(randomBytes(32))]);
    writeFileSync(join(instanceDir, 'host_key'), `ssh-ed25519 ${fake.toString('base64')} SHA256:fake\n`);
    const agent = new HostAgent('refuse', testConfig(testbed()), {
      instanceDir,
      logger: silentLogger(),
      requirementTimeoutMs: 20_000,
    });
    try {
      await expect(agent.start()).rejects.toThrow(/host key changed/);
      const status = agent.status();
      expect(status.ssh.state).toBe('closed');
      expect(status.ssh.lastError).toContain(testbed().hostKeyFingerprint);
      expect(status.ssh.lastError).toContain(agent.ssh.hostKey!.fingerprint);
      expect(status.ssh.lastError).toContain(`delete ${join(instanceDir, 'host_key')}`);
      expect(status.requirements.find((r) => r.state === 'failed')?.name).toBe('host key');
      // Doing what the error says: the session notices by itself, pins the real key and logs in.
      rmSync(join(instanceDir, 'host_key'));
      await waitFor(() => agent.ssh.state === 'connected', { what: 'ssh connected after the pin was deleted' });
      expect(readFileSync(join(instanceDir, 'host_key'), 'utf8')).toContain(testbed().hostKeyFingerprint);
    } finally {
      await agent.stop('test finished');
      rmSync(instanceDir, { recursive: true, force: true });
    }
  });

  it('fails requirement 2 (host key), not 1, on a pinned key file it cannot read, and says to delete it', async () => {
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-hostkey-'));
    writeFileSync(join(instanceDir, 'host_key'), 'garbage\n');
    const agent = new HostAgent('malformed', testConfig(testbed()), {
      instanceDir,
      logger: silentLogger(),
      requirementTimeoutMs: 20_000,
    });
    try {
      await expect(agent.start()).rejects.toThrow(
        /requirement 2 of \d \(host key\) failed: pinned host key .* is malformed/,
      );
      const reqs = agent.status().requirements;
      expect(reqs.find((r) => r.index === 1)?.state).toBe('ok');
      expect(reqs.find((r) => r.state === 'failed')?.detail).toContain(`delete it to pin the key again`);
    } finally {
      await agent.stop('test finished');
      rmSync(instanceDir, { recursive: true, force: true });
    }
  });

  /** A host agent whose identity file is a fresh key the guest does not know. */
  function agentWithUnknownKey(opts: Partial<HostAgentOptions>) {
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-authfail-'));
    const key = join(instanceDir, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const config = Config.parse({
      ...testbedConfigInput(testbed()),
      ssh: { ...testbedConfigInput(testbed()).ssh, identityFile: key },
    });
    const agent = new HostAgent('authfail', config, {
      instanceDir,
      logger: silentLogger(),
      ssh: { backoffInitialMs: 100, backoffMaxMs: 500 },
      ...opts,
    });
    return { agent, instanceDir, key };
  }

  it('keeps trying a key the guest does not accept, and shows why while it waits', async () => {
    const { agent, instanceDir, key } = agentWithUnknownKey({ requirementTimeoutMs: 3_000 });
    const waiting: (string | null)[] = [];
    agent.on('event', (e: AgentEvent) => {
      if (e.type === 'requirement' && e.requirement.index === 2 && e.requirement.state === 'waiting')
        waiting.push(e.requirement.detail);
    });
    try {
      await expect(agent.start()).rejects.toThrow(
        /requirement 2 of 4 \(host key\) failed: .*authentication methods failed/,
      );
      // The fix is there from the first refusal, for a key that will never be accepted.
      const retrying = new RegExp(
        `authentication methods failed.*; retrying for up to 60 s in case the VM is still installing the key; ` +
          `if not: put the public key of ${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} in the guest's ~`,
      );
      expect(waiting.some((d) => retrying.test(d ?? ''))).toBe(true);
      // Who logged in with what, not only ssh2's words.
      const who = `login as ${testbed().user} refused (ssh.identityFile ${key})`;
      expect(waiting.some((d) => d?.startsWith(who))).toBe(true);
      // Still trying: a booting guest may install the key a moment later.
      expect(agent.status().ssh.state).toBe('connecting');
    } finally {
      await agent.stop('test finished');
      rmSync(instanceDir, { recursive: true, force: true });
    }
  });

  it('fails requirement 2 with the fix once the guest has refused the key for the grace period', async () => {
    const { agent, instanceDir, key } = agentWithUnknownKey({
      requirementTimeoutMs: 120_000,
      loginRefusedGraceMs: 1_500,
    });
    const started = Date.now();
    try {
      await expect(agent.start()).rejects.toThrow(
        new RegExp(
          `requirement 2 of 4 \\(host key\\) failed: login as ${testbed().user} refused .*refused for \\d+ s: ` +
            `put the public key of ${key} in the guest's ~${testbed().user}/\\.ssh/authorized_keys`,
        ),
      );
      // Long before the requirement's own deadline.
      expect(Date.now() - started).toBeLessThan(60_000);
    } finally {
      await agent.stop('test finished');
      rmSync(instanceDir, { recursive: true, force: true });
    }
  });

  it('brings forwards back by themselves after the guest sshd restarts', async () => {
    const tb = testbed();
    const port = await freePort();
    const server = await guestServer(tb, 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => state(id) === 'forwarding', { what: 'forwarding' });
    // A runtime forward to another host port depends on SSH alone: it is suspended and resumed with it.
    const runtime = await h.agent.addForward({ proto: 'tcp', guestPort: port, hostPort: await freePort() });
    expect(runtime.state).toBe('forwarding');
    const reconnectsBefore = h.agent.ssh.reconnects;
    await tb.stopSshd();
    await waitFor(() => h.agent.ssh.state === 'reconnecting', { what: 'ssh reconnecting' });
    await waitFor(() => state(id) === 'suspended', { what: 'forward suspended' });
    await waitFor(() => state(runtime.id) === 'suspended', { what: 'runtime forward suspended' });
    expect(h.agent.forwards().find((f) => f.id === runtime.id)?.error).toMatch(/^ssh connection down: /);
    // Host listeners stay bound while suspended; a connection fails fast instead of hanging.
    expect(h.agent.forwards().find((f) => f.id === id)?.hostAddrs).toEqual([`127.0.0.1:${port}`, `[::1]:${port}`]);
    await tb.startSshd();
    await waitFor(() => state(id) === 'forwarding', { what: 'forwarding again', timeoutMs: 30_000 });
    expect(h.agent.ssh.reconnects).toBeGreaterThan(reconnectsBefore);
    expect((await roundTrip('127.0.0.1', port, 'after sshd restart')).toString()).toBe('after sshd restart');
    expect(h.agent.forwards().filter((f) => f.id === id)).toHaveLength(1);
    await waitFor(() => state(runtime.id) === 'forwarding', { what: 'runtime forward forwarding again' });
    const [runtimePort] = runtime.hostAddrs[0].split(':').slice(-1).map(Number);
    expect((await roundTrip('127.0.0.1', runtimePort, 'runtime')).toString()).toBe('runtime');
    await h.agent.removeForward(runtime.id);
    await stopChild(server);
  });

  it('survives a SIGKILLed guest agent: forwards return and an open connection keeps working', async () => {
    const tb = testbed();
    const port = await freePort();
    const server = await guestServer(tb, 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => state(id) === 'forwarding', { what: 'forwarding' });

    const open = net.connect({ host: '127.0.0.1', port });
    let echoed = '';
    open.on('data', (d) => {
      echoed += d;
    });
    open.write('before;');
    await waitFor(() => echoed === 'before;', { what: 'first echo' });

    const oldPid = h.agent.link.info!.pid;
    await tb.exec(`kill -KILL ${oldPid}`);
    await waitFor(() => state(id) === 'suspended', { what: 'forward suspended' });
    await waitFor(() => h.agent.link.up && h.agent.link.info!.pid !== oldPid, {
      what: 'a new guest agent',
      timeoutMs: 30_000,
    });
    await waitFor(() => state(id) === 'forwarding', { what: 'forwarding again' });

    open.write('after;');
    await waitFor(() => echoed === 'before;after;', { what: 'echo on the old connection' });
    open.end();
    expect((await roundTrip('::1', port, 'new connection')).toString()).toBe('new connection');
    await tb.exec(`kill -TERM ${oldPid} 2>/dev/null; true`);
    await stopChild(server);
  });
});
