// ForwardEngine against real host sockets and a fake SSH session whose channels are connections to a local echo server:
// suspension keeps listeners, channel failures are shown and warned about once, every state change is logged once, a
// host port serves one guest port at a time, and stop says what it closed.
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import type { Peer } from '@tether/protocol';
import { describe, expect, it, vi } from 'vitest';
import {
  connectionFrom,
  echo,
  engineEachTest,
  fakeSsh,
  freePort,
  held,
  holding,
  holdPort,
  lines,
  logger,
  makeEngine,
  prohibited,
  refusing,
  tcp,
  waitUntil,
} from '../../../test/helpers/forward-engine.js';
import { PortForward } from '../config/schema.js';
import { ForwardEngine } from './engine.js';

describe('ForwardEngine', () => {
  let engine: ForwardEngine;
  engineEachTest(() => engine);

  it('stops naming the lost SSH connection once it is back, while the guest agent link is still down', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const udp = await engine.add({ proto: 'udp', hostPort: await freePort(), guestPort: 5353 });
    const id = `tcp/127.0.0.1:${port}`;
    engine.setSshDown('Keepalive timeout');
    engine.suspendDetected('ssh connection lost: Keepalive timeout');
    expect(engine.view(id)).toMatchObject({
      state: 'suspended',
      error: 'ssh connection down: Keepalive timeout',
      cause: 'ssh-down',
    });
    engine.setSshDown(null);
    const waiting = 'agent link down: waiting for the guest agent (the SSH connection is back)';
    expect(engine.view(id)).toMatchObject({ state: 'suspended', error: waiting, cause: 'link-down' });
    expect(engine.view(udp.id)).toMatchObject({ state: 'suspended', error: waiting });
    // The link's own later reason still replaces it.
    engine.suspendDetected('guest socket refused');
    expect(engine.view(id)?.error).toBe(
      'agent link down: guest socket refused; its connections still go through SSH, and ports opened or closed meanwhile show once it is back',
    );
  });

  it('listens on 127.0.0.1 alone, with no error, on a host without ::1 (IPv6 turned off)', async () => {
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
      loopbacks: ['127.0.0.1'],
    });
    expect(lines.map((l) => l.msg)).toContain(
      'this host has no IPv6 loopback (::1): forwards that name no host address listen on 127.0.0.1 only',
    );
    const [port, hostPort] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('0.0.0.0', port)]);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({
      hostAddrs: [`127.0.0.1:${port}`],
      state: 'forwarding',
      error: null,
    });
    expect(await echo(port)).toBe('hi');
    const added = await engine.add({ proto: 'udp', hostPort, guestPort: 5353 });
    expect(added.hostAddrs).toEqual([`127.0.0.1:${hostPort}`]);
  });

  it('does not report a refused connection of a forward removed while its channel was opening', async () => {
    engine = makeEngine();
    const port = await freePort();
    holding.add(port);
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      const client = net.connect({ host: '127.0.0.1', port });
      client.on('error', () => undefined);
      await waitUntil(() => held.length === 1);
      await engine.setListeners([]); // the server went; the open in flight is refused after
      held.shift()?.();
      await new Promise<void>((r) => client.once('close', () => r()));
      expect(lines.filter((l) => l.msg.startsWith('cannot forward a connection'))).toEqual([]);
    } finally {
      holding.delete(port);
    }
  });

  it('keeps an added UDP forward suspended while the agent link is down: the link carries its datagrams', async () => {
    engine = makeEngine();
    const port = await freePort();
    const added = await engine.add({ proto: 'udp', hostPort: port, guestPort: 5353 });
    expect(added).toMatchObject({ state: 'suspended', error: 'agent link not up yet' });
    const fakePeer = () => Object.assign(new EventEmitter(), { onEvent: () => undefined });
    engine.attachPeer(fakePeer() as unknown as Peer);
    expect(engine.view(added.id)).toMatchObject({ state: 'forwarding', error: null });
    engine.suspendDetected('channel closed');
    expect(engine.view(added.id)).toMatchObject({ state: 'suspended', error: 'agent link down: channel closed' });
    // A link that closes before it is up (its setup timed out) reports no `down`: its peer closing is enough.
    const peer = fakePeer();
    engine.attachPeer(peer as unknown as Peer);
    expect(engine.view(added.id)?.state).toBe('forwarding');
    peer.emit('close', 'no reply to ports.subscribe');
    expect(engine.view(added.id)).toMatchObject({
      state: 'suspended',
      error: 'agent link down: no reply to ports.subscribe',
    });
    const tcpAdded = await engine.add({ proto: 'tcp', hostPort: await freePort(), guestPort: 80 });
    expect(tcpAdded.state).toBe('forwarding');
  });

  it('warns once about connections it cannot forward while they keep failing, counting the rest', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    refusing.add('127.0.0.1');
    try {
      for (let i = 0; i < 3; i++) await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      refusing.clear();
    }
    const warned = lines.filter((l) => l.level === 40 && l.msg.startsWith('cannot forward a connection'));
    expect(warned.map((l) => l.msg)).toEqual([
      `cannot forward a connection to guest 127.0.0.1:${port}: cannot open a channel: (SSH) Channel open failure: Connection refused`,
    ]);
  });

  it("asks the guest agent to scan when a detected listener's port refuses, not when sshd prohibits it", async () => {
    let scans = 0;
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [],
      maxForwards: 4096,
      instanceDir: '/tmp',
      logger,
      requestScan: () => scans++,
    });
    const [port, closed] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', port), tcp('::1', closed)]);
    await expect(echo(port)).resolves.toBe('hi');
    prohibited.add(port); // refused by sshd's configuration: nothing to scan for
    try {
      await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      prohibited.clear();
    }
    expect(scans).toBe(0);
    refusing.add('::1');
    try {
      await expect(echo(closed)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(scans).toBe(1);
      await expect(echo(closed)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(scans).toBe(2);
    } finally {
      refusing.clear();
    }
  });

  it('logs a first state once every host address has answered: conflict, not forwarding then conflict', async () => {
    engine = makeEngine();
    const port = await freePort();
    const held = await holdPort(port, '::1');
    try {
      await engine.setListeners([tcp('::', port)]);
      expect(engine.view(`tcp/[::]:${port}`)?.state).toBe('conflict');
      const states = lines.filter((l) => l.forward === `tcp/[::]:${port}` && l.state !== undefined);
      expect(states.map((l) => l.state)).toEqual(['conflict']);
    } finally {
      held.close();
    }
  });

  it('names a forward that takes both host addresses of a port once, with both addresses', async () => {
    engine = makeEngine();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const extra = await engine.add({ proto: 'tcp', hostPort: port, guestPort: 80 });
    expect(extra.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: `host 127.0.0.1:${port}, [::1]:${port} are taken by forward ${extra.id} (guest 127.0.0.1:80)`,
    });
  });

  it('names the host program too when the forward that has the host port first waits for it as well', async () => {
    engine = makeEngine();
    const port = await freePort();
    const held = await holdPort(port, '127.0.0.1');
    try {
      const detected = `tcp/0.0.0.0:${port}`;
      await engine.setListeners([tcp('0.0.0.0', port)]);
      const extra = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 80 });
      expect(extra.state).toBe('conflict');
      const view = engine.view(detected);
      expect(view?.state).toBe('conflict');
      expect(view?.error).toContain(
        `host 127.0.0.1:${port} is wanted by forward ${extra.id} (guest 127.0.0.1:80) first, which waits for it too: `,
      );
      expect(view?.error).toContain(extra.error ?? 'the added forward has no error');
    } finally {
      held.close();
    }
  });

  it('logs a conflict once at warn, while the other address family binds', async () => {
    engine = makeEngine();
    const port = await freePort();
    const holder = net.createServer().listen(port, '127.0.0.1');
    await once(holder, 'listening');
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      expect(engine.view(`tcp/127.0.0.1:${port}`)?.state).toBe('conflict');
      const warned = lines.filter((l) => l.level === 40 && l.msg.includes(`:${port}: conflict`));
      expect(warned).toHaveLength(1);
    } finally {
      holder.close();
    }
  });

  it('says a host port held by a connection from it (not a listener) is that, and binds once it is gone', async () => {
    // Host 127.0.0.1 only: the same port number on [::1] can be any other process's connection on a busy machine.
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ hostIP: '127.0.0.1' })],
      maxForwards: 4096,
      instanceDir: '/tmp',
      logger,
    });
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const { client, port } = await connectionFrom((server.address() as net.AddressInfo).port);
    try {
      await engine.setListeners([tcp('127.0.0.1', port)]);
      const id = `tcp/127.0.0.1:${port}`;
      // 127.0.0.1 is taken by the connection, which the first word on it already says (it is the one the log keeps).
      const held = `127.0.0.1:${port} is held by a connection from that port, not by a listener`;
      expect(engine.view(id)?.error).toContain(held);
      expect(engine.view(id)?.heldBy).toEqual({ kind: 'connection' });
      // The server closes first, so its side waits in TIME-WAIT and the client's port is free once it closes.
      const [serverSide] = await accepted;
      serverSide.destroy();
      await once(client, 'exit');
      // The retry backs off to 5 s between attempts.
      await vi.waitFor(
        () => expect(engine.view(id)).toMatchObject({ state: 'forwarding', error: null, heldBy: null }),
        {
          timeout: 15_000,
          interval: 100,
        },
      );
    } finally {
      client.kill();
      server.close();
    }
  });

  it("reaches a guest :: listener from host ::1 through the guest's 127.0.0.1 when its ::1 refuses (IPv6 off)", async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('::', port)]);
    refusing.add('::1');
    try {
      expect(await echo(port, '::1')).toBe('hi');
      expect(await echo(port, '127.0.0.1')).toBe('hi');
    } finally {
      refusing.clear();
    }
  });

  it("shows a forward whose channels the guest's sshd prohibits as error, naming the option, until one opens", async () => {
    engine = makeEngine();
    const port = await freePort();
    const id = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    prohibited.add(port);
    try {
      await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNRESET' });
      await expect.poll(() => engine.view(id)?.state).toBe('error');
      expect(engine.view(id)?.error).toMatch(
        /refuses the channel \(.*open failed\): in the guest.s \/etc\/ssh\/sshd_config .*set AllowTcpForwarding yes/,
      );
      expect(engine.view(id)?.cause).toBe('sshd-refuses');
    } finally {
      prohibited.clear();
    }
    expect(await echo(port)).toBe('hi');
    expect(engine.view(id)).toMatchObject({ state: 'forwarding', error: null, cause: null });
  });

  it('says which forwards it closes when it stops, and why', async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort: 80 });
    expect(added.state).toBe('forwarding');
    await engine.stop('host agent stopping: tether down');
    expect(lines.filter((l) => l.forward === added.id).map((l) => l.msg)).toEqual([
      `forward tcp guest 127.0.0.1:80 → host ${added.hostAddrs.join(', ')}: forwarding`,
      `forward ${added.id} closed (guest 127.0.0.1:80 → host ${added.hostAddrs.join(', ')}): host agent stopping: tether down`,
    ]);
  });

  it('keeps a static rule for an address the host does not have yet in error, retrying', async () => {
    const hostPort = await freePort();
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort: 80, hostIP: '192.0.2.1', hostPort, static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
      retryInitialMs: 10,
      retryMaxMs: 20,
    });
    await engine.start();
    const id = `tcp/127.0.0.1:80->${hostPort}`;
    expect(engine.view(id)).toMatchObject({
      state: 'error',
      error: expect.stringMatching(/EADDRNOTAVAIL.*; retrying$/),
    });
  });

  it('binds every address of both families for hostIP ::', async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    const f = await engine.add({ proto: 'tcp', hostIP: '::', hostPort, guestPort: 80 });
    expect(f).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${hostPort}`, `[::]:${hostPort}`] });
    expect(await echo(hostPort, '127.0.0.1')).toBe('hi');
    expect(await echo(hostPort, '::1')).toBe('hi');
  });
});
