// Automatic TCP forwarding against the testbed guest: guest listeners on every address kind appear on host
// 127.0.0.1 and ::1 at the same port and disappear when they close; half-close; bulk transfers with checksums both
// ways; many parallel connections; a slow reader does not grow memory; a busy host port is a retried conflict, named
// for another tether instance that holds it.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlServer, startControlServer } from '../host/src/control/server.js';
import { silentLogger } from '../host/src/log.js';
import {
  connectError,
  guestServer,
  type Harness,
  patternSha,
  roundTrip,
  sendPattern,
  startAgent,
  stopChild,
  testConfig,
} from './helpers/forward-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

describe.skipIf(!canRunTestbed())('TCP forwarding', () => {
  const testbed = useTestbed();
  let h: Harness;

  beforeAll(async () => {
    h = await startAgent(testbed());
  });
  afterAll(async () => {
    await h?.stop();
  });

  const state = (id: string) => h.agent.forwards().find((f) => f.id === id)?.state;

  for (const guestIP of ['0.0.0.0', '127.0.0.1', '::', '::1']) {
    it(`guest ${guestIP} is reachable on host 127.0.0.1 and ::1, and gone after it exits`, async () => {
      const port = await freePort();
      const server = await guestServer(testbed(), 'tcp', guestIP, port);
      const id = `tcp/${guestIP.includes(':') ? `[${guestIP}]` : guestIP}:${port}`;
      await waitFor(() => state(id) === 'forwarding', { what: `${id} forwarding` });
      expect((await roundTrip('127.0.0.1', port, 'ping4')).toString()).toBe('ping4');
      expect((await roundTrip('::1', port, 'ping6')).toString()).toBe('ping6');
      const view = h.agent.forwards().find((f) => f.id === id)!;
      expect(view.hostAddrs).toEqual([`127.0.0.1:${port}`, `[::1]:${port}`]);
      expect(view.bytesIn).toBeGreaterThanOrEqual(10);
      await stopChild(server);
      await waitFor(() => state(id) === undefined, { what: `${id} removed` });
      expect(await connectError('127.0.0.1', port)).toBe('ECONNREFUSED');
      expect(await connectError('::1', port)).toBe('ECONNREFUSED');
    });
  }

  it('guest 0.0.0.0 and :: on the same port share one host binding without a conflict', async () => {
    const port = await freePort();
    const v4 = await guestServer(testbed(), 'tcp', '0.0.0.0', port);
    const v6 = await guestServer(testbed(), 'tcp', '::', port);
    await waitFor(() => state(`tcp/0.0.0.0:${port}`) === 'forwarding' && state(`tcp/[::]:${port}`) === 'forwarding', {
      what: 'both forwarding',
    });
    expect(h.agent.forwards().filter((f) => f.guestAddr.endsWith(`:${port}`) && f.error)).toEqual([]);
    expect((await roundTrip('::1', port, 'x')).toString()).toBe('x');
    await stopChild(v4);
    await waitFor(() => state(`tcp/0.0.0.0:${port}`) === undefined, { what: 'v4 forward removed' });
    // The shared host listeners stay for the remaining guest listener.
    expect((await roundTrip('127.0.0.1', port, 'still')).toString()).toBe('still');
    await stopChild(v6);
    await waitFor(async () => (await connectError('127.0.0.1', port)) === 'ECONNREFUSED', { what: 'host port closed' });
  });

  it('propagates half-close: a client that shuts down its write side gets the full reply', async () => {
    const port = await freePort();
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', port, 'sha');
    await waitFor(() => state(`tcp/127.0.0.1:${port}`) === 'forwarding', { what: 'forwarding' });
    const payload = Buffer.alloc(1 << 20, 7);
    const reply = await roundTrip('127.0.0.1', port, payload);
    expect(reply.toString()).toBe(createHash('sha256').update(payload).digest('hex'));
    await stopChild(server);
  });

  it('moves 1 GiB each way with matching sha256', async () => {
    const GiB = 1 << 30;
    const port = await freePort();
    const sink = await guestServer(testbed(), 'tcp', '127.0.0.1', port, 'sha');
    const sendPort = await freePort();
    const source = await guestServer(testbed(), 'tcp', '127.0.0.1', sendPort, 'send');
    await waitFor(() => state(`tcp/127.0.0.1:${port}`) === 'forwarding', { what: 'sink forwarding' });
    await waitFor(() => state(`tcp/127.0.0.1:${sendPort}`) === 'forwarding', { what: 'source forwarding' });

    // host → guest
    const up = await new Promise<string>((resolve, reject) => {
      let reply = '';
      const s = net.connect({ host: '127.0.0.1', port }, () => void sendPattern(s, GiB));
      s.on('data', (d) => {
        reply += d;
      });
      s.on('end', () => resolve(reply));
      s.on('error', reject);
    });
    expect(up).toBe(patternSha(GiB));

    // guest → host
    const down = await new Promise<{ sha: string; bytes: number }>((resolve, reject) => {
      const hash = createHash('sha256');
      let bytes = 0;
      const s = net.connect({ host: '::1', port: sendPort }, () => s.write(`${GiB}\n`));
      s.on('data', (d) => {
        bytes += d.length;
        hash.update(d);
      });
      s.on('end', () => resolve({ sha: hash.digest('hex'), bytes }));
      s.on('error', reject);
    });
    expect(down.bytes).toBe(GiB);
    expect(down.sha).toBe(patternSha(GiB));
    await stopChild(sink);
    await stopChild(source);
  });
  it('serves 200 parallel connections', async () => {
    const port = await freePort();
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', port);
    await waitFor(() => state(`tcp/127.0.0.1:${port}`) === 'forwarding', { what: 'forwarding' });
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => roundTrip(i % 2 ? '::1' : '127.0.0.1', port, `conn-${i}`)),
    );
    expect(replies.map(String)).toEqual(Array.from({ length: 200 }, (_, i) => `conn-${i}`));
    await waitFor(() => h.agent.forwards().find((f) => f.id === `tcp/127.0.0.1:${port}`)?.connections === 0, {
      what: 'connections closed',
    });
    await stopChild(server);
  });

  it('a guest port that stops accepting does not hold up the other forwards', async () => {
    const [stalled, healthy] = [await freePort(), await freePort()];
    // Listens with a backlog of one, then blocks its thread and never accepts (a server paused in a debugger): once
    // the backlog is full, sshd's connects to it hang.
    const paused = testbed().spawn(
      'node',
      [
        '-e',
        `require('net').createServer().listen({ host: '127.0.0.1', port: ${stalled}, backlog: 1 }, () => ` +
          'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600000))',
      ],
      { user: testbed().user },
    );
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', healthy);
    try {
      await waitFor(() => state(`tcp/127.0.0.1:${stalled}`) === 'forwarding', { what: 'the stalled port forwarded' });
      await waitFor(() => state(`tcp/127.0.0.1:${healthy}`) === 'forwarding', { what: 'the healthy port forwarded' });
      // 300 clients that connect and give up at once, as a browser's retries do: each leaves a hanging open.
      for (let i = 0; i < 300; i++) {
        const c = net.connect({ host: '127.0.0.1', port: stalled }, () => c.destroy());
        c.on('error', () => {});
      }
      const pending = () => h.agent.forwards().find((f) => f.id === `tcp/127.0.0.1:${stalled}`)?.connections ?? 0;
      await waitFor(() => pending() >= 200, { what: 'the clients pending in the agent' });
      // Before, they took every channel-open slot in arrival order, and the healthy forward waited about a minute.
      let timer: NodeJS.Timeout | undefined;
      const reply = await Promise.race([
        roundTrip('127.0.0.1', healthy, 'still here'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('the healthy forward is held up by the stalled one')), 15_000);
        }),
      ]).finally(() => clearTimeout(timer));
      expect(String(reply)).toBe('still here');
      expect(pending()).toBeGreaterThan(64); // the stalled port's opens still hang meanwhile
    } finally {
      await stopChild(paused);
      await stopChild(server);
    }
  });

  it('keeps memory bounded for a slow reader (backpressure through the SSH window)', async () => {
    const total = 512 << 20;
    const port = await freePort();
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', port, 'send');
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => state(id) === 'forwarding', { what: 'forwarding' });
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const s = net.connect({ host: '127.0.0.1', port }, () => s.write(`${total}\n`));
    s.pause(); // the reader does not read: the flow must stall, not pile up in the agent
    const bytesOut = () => h.agent.forwards().find((f) => f.id === id)?.bytesOut ?? 0;
    // Wait until the flow stalls: bytesOut unchanged across several polls.
    let last = -1;
    let still = 0;
    await waitFor(
      () => {
        const now = bytesOut();
        still = now > 0 && now === last ? still + 1 : 0;
        last = now;
        return still >= 10;
      },
      { what: 'the transfer to stall', intervalMs: 100, timeoutMs: 30_000 },
    );
    const stalledAt = bytesOut();
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    expect(stalledAt).toBeLessThan(64 << 20);
    expect(rssGrowth).toBeLessThan(128 << 20);
    // Then read everything: nothing was lost while stalled.
    let received = 0;
    s.on('data', (d) => {
      received += d.length;
    });
    s.resume();
    await new Promise((r) => s.once('end', r));
    expect(received).toBe(total);
    await stopChild(server);
  });

  it('reports a busy host port as conflict and forwards once it is free', async () => {
    const port = await freePort();
    const blockers = await Promise.all(
      ['127.0.0.1', '::1'].map(
        (host) =>
          new Promise<net.Server>((resolve) => {
            const srv = net.createServer((c) => c.end('host-owner'));
            srv.listen({ host, port, ipv6Only: host === '::1' }, () => resolve(srv));
          }),
      ),
    );
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => state(id) === 'conflict', { what: 'conflict' });
    const view = h.agent.forwards().find((f) => f.id === id)!;
    expect(view.error).toContain(`127.0.0.1:${port}`);
    expect(view.error).toContain('in use');
    await Promise.all(blockers.map((b) => new Promise((r) => b.close(r))));
    // Both families retry on their own schedule: wait until neither reports a conflict any more.
    await waitFor(
      () => {
        const v = h.agent.forwards().find((f) => f.id === id);
        return v?.state === 'forwarding' && v.error === null;
      },
      { what: 'forwarding on both families after the port was freed', timeoutMs: 20_000 },
    );
    expect((await roundTrip('127.0.0.1', port, 'mine')).toString()).toBe('mine');
    await stopChild(server);
  });

  it('a port busy on one family is a conflict while the other family keeps forwarding', async () => {
    const port = await freePort();
    const blocker = await new Promise<net.Server>((resolve) => {
      const srv = net.createServer((c) => c.destroy());
      srv.listen({ host: '::1', port, ipv6Only: true }, () => resolve(srv));
    });
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => state(id) === 'conflict', { what: 'conflict on [::1]' });
    const view = h.agent.forwards().find((f) => f.id === id)!;
    expect(view.error).toContain(`[::1]:${port} is in use`);
    expect(view.error).toContain(`127.0.0.1:${port} forwarding meanwhile`);
    expect((await roundTrip('127.0.0.1', port, 'v4')).toString()).toBe('v4');
    await new Promise((r) => blocker.close(r));
    await waitFor(
      () => {
        const v = h.agent.forwards().find((f) => f.id === id);
        return v?.state === 'forwarding' && v.error === null;
      },
      { what: 'both bound', timeoutMs: 20_000 },
    );
    expect((await roundTrip('::1', port, 'v6')).toString()).toBe('v6');
    await stopChild(server);
  });
});

// Two VMs side by side, each with its own instance under one TETHER_HOME: their guests serve the same port, and the
// host has it once. The second instance's conflict names the first (lsof would only show a tether agent), and it takes
// the port once the first lets it go.
describe.skipIf(!canRunTestbed())('TCP forwarding: two instances whose guests serve the same port', () => {
  const testbedA = useTestbed();
  const testbedB = useTestbed();
  const home = mkdtempSync(join(tmpdir(), 'tether-two-'));
  const harnesses: Harness[] = [];
  let control: ControlServer | undefined;

  afterAll(async () => {
    await control?.close();
    for (const h of harnesses) await h.stop();
    rmSync(home, { recursive: true, force: true });
  });

  /** An in-process agent for `name` in `home`, as `tether up` lays it out (tether.yaml). */
  async function instance(name: string, tb: Testbed): Promise<Harness> {
    const instanceDir = join(home, name);
    mkdirSync(instanceDir, { mode: 0o700 });
    writeFileSync(join(instanceDir, 'tether.yaml'), JSON.stringify(testConfig(tb)));
    const h = await startAgent(tb, {}, { instanceDir });
    harnesses.push(h);
    return h;
  }

  it("names the other instance and its forward, and takes the port once that instance's guest server stops", async () => {
    const a = await instance('vm-a', testbedA());
    control = await startControlServer({
      socketPath: join(home, 'vm-a', 'ha.sock'),
      agent: a.agent,
      log: silentLogger(),
    });
    const b = await instance('vm-b', testbedB());
    const port = await freePort();
    const serverA = await guestServer(testbedA(), 'tcp', '0.0.0.0', port);
    const view = (h: Harness, id: string) => h.agent.forwards().find((f) => f.id === id);
    await waitFor(() => view(a, `tcp/0.0.0.0:${port}`)?.state === 'forwarding', { what: 'vm-a forwarding' });
    const serverB = await guestServer(testbedB(), 'tcp', '127.0.0.1', port);
    const idB = `tcp/127.0.0.1:${port}`;
    await waitFor(() => view(b, idB)?.state === 'conflict', { what: 'vm-b in conflict' });
    const conflict = view(b, idB)!;
    expect(conflict.heldBy).toEqual({
      kind: 'instance',
      instance: 'vm-a',
      id: `tcp/0.0.0.0:${port}`,
      address: expect.stringMatching(new RegExp(`^(127\\.0\\.0\\.1|\\[::1\\]):${port}$`)),
      state: 'forwarding',
    });
    // Both addresses held alike: one sentence names both.
    expect(conflict.error).toContain(
      `host addresses 127.0.0.1:${port}, [::1]:${port} are in use by tether instance vm-a (its forward tcp/0.0.0.0:${port})`,
    );

    await stopChild(serverA);
    await waitFor(() => view(b, idB)?.state === 'forwarding' && view(b, idB)?.error === null, {
      what: 'vm-b forwarding once vm-a let the port go',
      timeoutMs: 15_000,
    });
    expect((await roundTrip('127.0.0.1', port, 'to-b')).toString()).toBe('to-b');
    await stopChild(serverB);
  });

  it('names the other instance whose guest is unreachable while its suspended forward keeps the port', async () => {
    const [a, b] = harnesses;
    const port = await freePort();
    const serverA = await guestServer(testbedA(), 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    const view = (h: Harness) => h.agent.forwards().find((f) => f.id === id);
    await waitFor(() => view(a)?.state === 'forwarding', { what: 'vm-a forwarding' });
    await testbedA().stopSshd();
    try {
      await waitFor(() => view(a)?.state === 'suspended', { what: 'vm-a suspended' });
      const serverB = await guestServer(testbedB(), 'tcp', '127.0.0.1', port);
      await waitFor(() => view(b)?.state === 'conflict', { what: 'vm-b in conflict' });
      expect(view(b)?.heldBy).toMatchObject({ kind: 'instance', instance: 'vm-a', id, state: 'suspended' });
      expect(view(b)?.error).toContain(
        `in use by tether instance vm-a (its forward ${id}, suspended: its guest is unreachable)`,
      );
      await stopChild(serverB);
    } finally {
      await testbedA().startSshd();
      await stopChild(serverA);
    }
  });
});
