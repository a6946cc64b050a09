// acceptEarly against real loopback connections: the hook sees each client's address before Node builds its Socket,
// the 'connection' listener claims what the hook returned, a connection Node drops hands its value to `drop`, and a
// hook that throws leaves accepting as it was.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { acceptEarly, type ClientAddr } from './accept-early.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function listen(onSocket: (s: net.Socket) => void): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    sockets.push(s);
    onSocket(s);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port }, () => resolve(c));
    c.on('error', reject);
    sockets.push(c);
  });
}

describe('acceptEarly', () => {
  it("calls start with the client's address before the Socket exists, and the socket's listener claims its value", async () => {
    const seen: { peer: ClientAddr; socketsBefore: number }[] = [];
    const claimed: (string | undefined)[] = [];
    let sockets = 0;
    let claim: (s: net.Socket) => string | undefined = () => undefined;
    const { server, port } = await listen((s) => {
      sockets++;
      claimed.push(claim(s), claim(s));
    });
    claim = acceptEarly(
      server,
      (peer) => {
        seen.push({ peer, socketsBefore: sockets });
        return `value for ${peer.port}`;
      },
      () => {
        throw new Error('nothing should be dropped');
      },
    );
    const c = await connect(port);
    await expect.poll(() => claimed.length).toBe(2);
    expect(seen).toEqual([{ peer: { address: '127.0.0.1', port: c.localPort }, socketsBefore: 0 }]);
    // Claimed once: a second claim for the same socket gets nothing.
    expect(claimed).toEqual([`value for ${c.localPort}`, undefined]);
  });

  it('hands the value of a connection Node drops (maxConnections reached) to drop', async () => {
    const dropped: string[] = [];
    const claimed: (string | undefined)[] = [];
    let claim: (s: net.Socket) => string | undefined = () => undefined;
    const { server, port } = await listen((s) => claimed.push(claim(s)));
    server.maxConnections = 1;
    claim = acceptEarly(
      server,
      (peer) => `value for ${peer.port}`,
      (v) => dropped.push(v),
    );
    const first = await connect(port);
    await expect.poll(() => claimed).toEqual([`value for ${first.localPort}`]);
    const second = await connect(port);
    const secondPort = second.localPort;
    await new Promise((resolve) => second.on('close', resolve));
    expect(dropped).toEqual([`value for ${secondPort}`]);
    expect(claimed).toHaveLength(1);
  });

  it('keeps accepting through the ordinary path when start throws', async () => {
    const claimed: (string | undefined)[] = [];
    let claim: (s: net.Socket) => string | undefined = () => undefined;
    const { server, port } = await listen((s) => claimed.push(claim(s)));
    claim = acceptEarly(
      server,
      () => {
        throw new Error('boom');
      },
      () => {},
    );
    await connect(port);
    await connect(port);
    await expect.poll(() => claimed).toEqual([undefined, undefined]);
  });
});
