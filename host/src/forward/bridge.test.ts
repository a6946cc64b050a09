// The bridge against real ssh2 on both ends (an in-process ssh2 Server answering direct-tcpip) and real loopback
// sockets: the guest's EOF reaches the client as a clean end after all data; an SSH connection lost mid-reply
// reaches it as a reset, never as a clean end of a truncated reply.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { Client, type Connection, Server, type ServerChannel, utils } from 'ssh2';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import type { ForwardStats } from './binding.js';
import { bridge } from './bridge.js';

type GuestBehaviour = (channel: ServerChannel) => void;

interface Rig {
  /** Connects a client to the host listener that bridges into the SSH connection. */
  connect(): net.Socket;
  stats: ForwardStats;
  /** The server side of the SSH connection, to cut it. */
  conn: Connection;
  /** Host-side sockets of the listener still open. */
  openSockets(): Promise<number>;
  close(): Promise<void>;
}

const listen = (server: net.Server | Server): Promise<number> =>
  new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));

async function rig(guest: GuestBehaviour): Promise<Rig> {
  const hostKey = utils.generateKeyPairSync('ed25519').private;
  let conn: Connection | undefined;
  const sshServer = new Server({ hostKeys: [hostKey] }, (c) => {
    conn = c;
    c.on('error', () => {});
    c.on('authentication', (ctx) => ctx.accept());
    c.on('ready', () => c.on('tcpip', (accept) => guest(accept())));
  });
  const sshPort = await listen(sshServer);
  const client = new Client();
  client.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', reject);
    client.connect({ host: '127.0.0.1', port: sshPort, username: 'test', password: 'test' });
  });
  const stats: ForwardStats = { connections: 0, bytesIn: 0, bytesOut: 0 };
  const open = () =>
    new Promise<Duplex>((resolve, reject) =>
      client.forwardOut('127.0.0.1', 1, '127.0.0.1', 2, (err, ch) => (err ? reject(err) : resolve(ch))),
    );
  const listener = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) =>
    bridge(s, open, { label: 'test', stats, log: silentLogger() }),
  );
  const port = await listen(listener);
  return {
    connect: () => net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }),
    stats,
    conn: conn as Connection,
    openSockets: () => new Promise((resolve) => listener.getConnections((_err, n) => resolve(n))),
    async close() {
      client.destroy();
      await new Promise((r) => listener.close(r));
      await new Promise((r) => sshServer.close(r));
    },
  };
}

/** Collects what a client receives and how its connection ended. */
function outcome(s: net.Socket): Promise<{ data: string; ended: 'end' | string }> {
  return new Promise((resolve) => {
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      data += d;
    });
    s.on('end', () => resolve({ data, ended: 'end' }));
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ data, ended: err.code ?? err.message }));
  });
}

describe('bridge', () => {
  let r: Rig | undefined;
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it('passes the guest EOF on as a clean end after every byte, and counts both ways', async () => {
    r = await rig((ch) => ch.pipe(ch));
    const s = r.connect();
    const payload = 'x'.repeat(100_000);
    s.end(payload);
    expect(await outcome(s)).toEqual({ data: payload, ended: 'end' });
    await expect.poll(() => r?.stats).toEqual({ connections: 0, bytesIn: 100_000, bytesOut: 100_000 });
  });

  it('resets the client when the SSH connection is lost mid-reply, instead of ending a truncated reply', async () => {
    r = await rig((ch) => ch.write('partial'));
    const s = r.connect();
    const result = outcome(s);
    s.write('request');
    await expect.poll(() => r?.stats.bytesOut).toBe('partial'.length);
    r.conn.end();
    expect(await result).toEqual({ data: 'partial', ended: 'ECONNRESET' });
    await expect.poll(() => r?.stats.connections).toBe(0);
  });

  it('delivers the whole reply when the guest closes while the client, not reading yet, is still sending', async () => {
    const reply = 'y'.repeat(1536 * 1024); // within the SSH window, so the guest can send it all and close at once
    let guestClosed = false;
    r = await rig((ch) => {
      ch.on('data', () => {}); // the guest ignores the request
      ch.on('close', () => {
        guestClosed = true;
      });
      ch.end(reply); // data, EOF, CLOSE
    });
    const s = r.connect();
    s.pause(); // the reply backs up into the paused channel, so the channel's end waits for the client to read
    s.write('request');
    await expect.poll(() => guestClosed).toBe(true);
    for (let i = 0; i < 8; i++) s.write('more of the request after the guest closed');
    const result = outcome(s);
    s.resume(); // paused explicitly above: a 'data' listener alone does not restart the flow
    expect(await result).toEqual({ data: reply, ended: 'end' });
    s.end(); // the client's FIN must reach the bridge, though it last paused the socket for the channel
    await expect.poll(() => r?.openSockets()).toBe(0);
  });
});
