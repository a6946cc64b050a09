// Ports a container network publishes only with an iptables DNAT rule (CNI portmap, as k3s and Kubernetes hostPort
// make them): no socket listens on them, yet the guest agent running as root reports them and the host forwards
// them, with the rule shown as the process. The guest agent is started as root here, as its systemd unit runs it.
import { type ChildProcess, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectError,
  guestServer,
  type Harness,
  roundTrip,
  startAgent,
  stopChild,
} from './helpers/forward-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

const BUNDLE = join(import.meta.dirname, '../build/guest/tether-guest.cjs');
const CHAIN = 'CNI-DN-tethertest';

const haveIptables = spawnSync('iptables', ['-V']).status === 0;
if (!haveIptables) {
  if (process.env.CI === 'true') throw new Error('the DNAT test needs iptables (.ci/run installs it)');
  console.warn('skipping the DNAT forwarding test: iptables is not installed');
}

describe.skipIf(!canRunTestbed() || !haveIptables)('ports published by a DNAT rule', () => {
  const testbed = useTestbed();
  let guestAgent: ChildProcess;
  let h: Harness;

  beforeAll(async () => {
    const tb = testbed();
    const socket = join(tb.guestDir, 'root-agent.sock');
    guestAgent = tb.spawn('node', [BUNDLE, 'run', '--socket', socket, '--socket-owner', tb.user]);
    let out = '';
    guestAgent.stdout?.on('data', (d: Buffer) => {
      out += d;
    });
    await waitFor(() => out.includes('agent listening') || guestAgent.exitCode !== null, { what: 'root guest agent' });
    h = await startAgent(tb, { guestAgent: { socket, provision: 'never' } });
  });
  afterAll(async () => {
    await h?.stop();
    if (guestAgent) await stopChild(guestAgent);
  });

  it('forwards a port only a CNI DNAT rule publishes, names the rule, and drops it with the rule', async () => {
    const tb = testbed();
    const [published, backend] = [await freePort(), await freePort()];
    const server = await guestServer(tb, 'tcp', '127.0.0.1', backend);
    // What the portmap plugin does for a hostPort, reduced to the guest's own (loopback) connections.
    const rule = `-p tcp -m tcp --dport ${published} -j DNAT --to-destination 127.0.0.1:${backend}`;
    const jump = `-p tcp -d 127.0.0.1/32 --dport ${published} -j ${CHAIN}`;
    const add = await tb.exec(
      `iptables -t nat -N ${CHAIN} && iptables -t nat -A ${CHAIN} ${rule} && iptables -t nat -A OUTPUT ${jump}`,
    );
    expect(add.code, add.stderr).toBe(0);

    const id = `tcp/0.0.0.0:${published}`;
    const view = () => h.agent.forwards().find((f) => f.id === id);
    await waitFor(() => view()?.state === 'forwarding', { what: `${id} forwarding`, timeoutMs: 30_000 });
    expect(view()?.process).toEqual({ pid: 0, command: `iptables DNAT to 127.0.0.1:${backend} (${CHAIN})` });
    expect((await roundTrip('127.0.0.1', published, 'through the rule')).toString()).toBe('through the rule');

    const del = await tb.exec(
      `iptables -t nat -D OUTPUT ${jump} && iptables -t nat -F ${CHAIN} && iptables -t nat -X ${CHAIN}`,
    );
    expect(del.code, del.stderr).toBe(0);
    await waitFor(() => view() === undefined, { what: `${id} removed`, timeoutMs: 30_000 });
    expect(await connectError('127.0.0.1', published)).toBe('ECONNREFUSED');
    await stopChild(server);
  });
});
