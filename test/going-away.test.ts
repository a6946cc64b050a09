// A guest that said it shuts down (its guest agent's goodbye) and whose sshd then goes quiet without closing the
// connection, as a guest's network stopping first leaves it: the host agent gives the connection up within seconds,
// naming the shutdown, where keepalive alone (10 s × 3 here) would take 30 s and blame a paused VM. The stall is the
// testbed's socat bridge SIGSTOPped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Harness, startAgent, testConfig } from './helpers/forward-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

describe.skipIf(!canRunTestbed())('a guest going away', () => {
  const testbed = useTestbed();
  let h: Harness;

  beforeAll(async () => {
    const tb = testbed();
    h = await startAgent(
      tb,
      { ssh: { ...testConfig(tb).ssh, keepaliveInterval: 10, keepaliveCountMax: 3 } },
      { ssh: { backoffInitialMs: 100, backoffMaxMs: 1_000, readyTimeoutMs: 5_000 } },
    );
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('keeps a connection that still answers, and gives up on one gone quiet after the goodbye, naming it', async () => {
    const tb = testbed();
    expect(h.agent.status().ssh.state).toBe('connected');
    const reconnectsBefore = h.agent.ssh.reconnects;
    h.agent.ssh.guestGoingAway();
    // Probes answered meanwhile: the connection is kept (a guest whose sshd outlives the goodbye stays reachable).
    const probesAnswered = performance.now() + 5_000;
    await waitFor(() => performance.now() > probesAnswered, { what: '5 s of answered probes', timeoutMs: 6_000 });
    expect(h.agent.status().ssh.state).toBe('connected');
    expect(h.agent.ssh.reconnects).toBe(reconnectsBefore);

    tb.pauseBridge();
    try {
      // Within keepalive's 30 s, with the shutdown as the reason rather than keepalive's.
      await waitFor(() => h.agent.status().ssh.state !== 'connected', { what: 'the quiet connection given up' });
      expect(h.agent.status().ssh.lastError).toMatch(
        /^the guest is shutting down: .* answered nothing for 3 s after its guest agent said so/,
      );
    } finally {
      tb.resumeBridge();
    }
    await waitFor(() => h.agent.status().ssh.state === 'connected', { what: 'connected again', timeoutMs: 30_000 });
    expect(h.agent.ssh.reconnects).toBe(reconnectsBefore + 1);
  });
});
