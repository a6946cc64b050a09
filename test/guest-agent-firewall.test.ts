// tether-guest in a guest whose firewall silently drops new loopback TCP connections (sshd's port excepted): the
// agent's own loopback connections (the table anchors, guest/src/ports/anchors.ts) cannot be made, and it must still
// start promptly and report listeners.
import { type ChildProcess, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../guest/src/testing/client.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const BUNDLE = join(import.meta.dirname, '../build/guest/tether-guest.cjs');
const haveIptables = spawnSync('iptables', ['-V']).status === 0 && spawnSync('ip6tables', ['-V']).status === 0;
if (!haveIptables && process.env.CI === 'true')
  throw new Error('the firewall test needs iptables (.ci/run installs it)');

describe.skipIf(!canRunTestbed() || !haveIptables)('tether-guest behind a loopback firewall', () => {
  const testbed = useTestbed();
  let agent: ChildProcess | undefined;
  let client: TestClient | undefined;
  let server: ChildProcess | undefined;

  afterAll(async () => {
    client?.peer.close('test done');
    for (const child of [server, agent]) {
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('starts without its loopback anchors and still reports a new listener', async () => {
    if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build:guest first`);
    const tb = testbed();
    const drop = '-i lo -p tcp --syn -j DROP';
    for (const cmd of [`iptables -I INPUT ${drop.replace('-j', '! --dport 22 -j')}`, `ip6tables -I INPUT ${drop}`]) {
      const r = await tb.exec(cmd);
      expect([cmd, r.code, r.stderr]).toEqual([cmd, 0, '']);
    }
    // The rule holds: a loopback connect to a listening port gets no answer.
    const probe = await tb.exec(
      `python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.socket(); c.settimeout(0.3); print(c.connect_ex(s.getsockname()))"`,
    );
    expect(probe.stdout.trim()).not.toBe('0');

    const socket = join(tb.guestDir, 'agent.sock');
    const log: string[] = [];
    const started = Date.now();
    agent = tb.spawn('node', [BUNDLE, 'run', '--socket', socket, '--log-level', 'debug']);
    agent.stdout?.setEncoding('utf8').on('data', (s: string) => log.push(s));
    agent.stderr?.setEncoding('utf8').on('data', (s: string) => log.push(s));
    await waitFor(() => log.join('').includes('agent listening') || agent?.exitCode !== null, {
      what: 'the agent to listen',
    });
    expect(agent.exitCode).toBeNull();
    // Two families, each given up on after 500 ms; the rest is node's start-up on a loaded machine.
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(log.join('').match(/no table anchors for this family/g)).toHaveLength(2);

    client = await connectClient(socket, ['ports.delta']);
    const snapshot = await client.peer.request('ports.subscribe', {});
    const ports = new Set(snapshot.listeners.map((l) => l.port));
    client.peer.onEvent('ports.delta', (d) => {
      for (const l of d.added) ports.add(l.port);
    });
    server = tb.spawn('python3', ['-m', 'http.server', '47391', '--bind', '127.0.0.1']);
    await waitFor(() => ports.has(47391), { what: 'port 47391 reported by the agent' });
  });
});
