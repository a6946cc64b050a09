// tcpPortHolder against this host's real sockets (Linux /proc/net/tcp*): a listener, a connection from a port, none.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { tcpPortHolder } from './port-holder.js';

const open: { destroy?: () => void; close?: () => void }[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.destroy ? s.destroy() : s.close?.();
});

async function listen(host: string): Promise<number> {
  const server = net.createServer((c) => c.on('error', () => {}));
  open.push(server);
  server.listen({ host, port: 0, ipv6Only: host.includes(':') });
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

describe('tcpPortHolder', () => {
  it('finds a listener on the address or a wildcard of its family, not on the other family', async () => {
    const p4 = await listen('127.0.0.1');
    expect(await tcpPortHolder('127.0.0.1', p4)).toBe('listener');
    expect(await tcpPortHolder('0.0.0.0', p4)).toBe('listener');
    expect(await tcpPortHolder('::1', p4)).toBeNull();
    const p6 = await listen('::1');
    expect(await tcpPortHolder('::1', p6)).toBe('listener');
    expect(await tcpPortHolder('::', p6)).toBe('listener');
    expect(await tcpPortHolder('127.0.0.1', p6)).toBeNull();
  });

  it('tells a connection from the port (a client port the kernel picked) from a listener', async () => {
    const server = await listen('127.0.0.1');
    const client = net.connect({ host: '127.0.0.1', port: server });
    open.push(client);
    await once(client, 'connect');
    const port = client.localPort as number;
    expect(await tcpPortHolder('127.0.0.1', port)).toBe('connection');
  });

  it('says nothing for a port no socket has', async () => {
    const port = await listen('127.0.0.1');
    open.pop()?.close?.();
    expect(await tcpPortHolder('127.0.0.1', port)).toBeNull();
  });
});
