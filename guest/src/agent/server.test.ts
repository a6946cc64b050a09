import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { lstatSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventName, PortDelta } from '@tether/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/helpers/wait.js';
import { Logger } from '../log.js';
import { PortPoller } from '../ports/index.js';
import { connectClient, type TestClient } from '../testing/client.js';
import { AgentServer, type AgentServerOptions } from './server.js';

// The agent over a real unix socket with the real scanner; the poller includes this process's own sockets, because
// the listeners the tests open live in this process.

let dir: string;
let logs: Record<string, unknown>[];
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tether-agent-'));
  logs = [];
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

async function startServer(options: AgentServerOptions = {}): Promise<AgentServer> {
  const log = new Logger('debug', {}, (line) => logs.push(JSON.parse(line)));
  const server = new AgentServer({
    socketPath: join(dir, 'run/agent.sock'),
    poller: new PortPoller({ excludeSelf: false, minIntervalMs: 20, maxIntervalMs: 100 }),
    log,
    ...options,
  });
  await server.start();
  cleanups.push(() => server.close());
  return server;
}

async function client(server: AgentServer, events?: EventName[]): Promise<TestClient> {
  const c = await connectClient(server.socketPath, events);
  cleanups.push(() => c.peer.close('test done'));
  return c;
}

async function listenTcp(host: string): Promise<Server> {
  const s = createServer();
  s.listen({ host, port: 0 });
  await once(s, 'listening');
  cleanups.push(() => new Promise((r) => s.close(r)));
  return s;
}

function addedPort(deltas: PortDelta[] | undefined, port: number) {
  return deltas?.flatMap((d) => d.added).find((l) => l.proto === 'tcp' && l.port === port);
}

describe('agent server', () => {
  it('says hello with its version and capabilities and answers info', async () => {
    const server = await startServer();
    const { peer } = await client(server);
    expect(peer.remote?.agent).toMatch(/^tether-guest\//);
    expect(peer.remote?.caps).toEqual(expect.arrayContaining(['ports', 'udp', 'fs']));
    const info = await peer.request('info', {});
    expect(info.pid).toBe(process.pid);
    expect(info.caps).toContain('ports');
    expect(info.scanIntervalMs).toBeGreaterThanOrEqual(20);
    expect(await peer.ping()).toBeGreaterThanOrEqual(0);
  });

  it('makes the socket 0600, owned by the socket owner, in a directory it creates 0711', async () => {
    const server = await startServer({ socketOwner: 'nobody' });
    const st = statSync(server.socketPath);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' })));
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o711);
  });

  it('refuses an unknown socket owner', async () => {
    const server = new AgentServer({ socketPath: join(dir, 'a.sock'), socketOwner: 'no-such-user-tether' });
    await expect(server.start()).rejects.toThrow(/no-such-user-tether/);
  });

  it('replaces a stale socket file, refuses a live one and a non-socket', async () => {
    const first = await startServer();
    const path = first.socketPath;
    await expect(new AgentServer({ socketPath: path }).start()).rejects.toThrow(/already serving/);
    // A crashed agent leaves its socket file behind: a bound socket nobody listens on.
    await first.close();
    execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
    expect(lstatSync(path).isSocket()).toBe(true);
    const second = await startServer();
    expect((await client(second)).peer.remote).not.toBeNull();
    await second.close();
    writeFileSync(path, 'not a socket');
    await expect(new AgentServer({ socketPath: path }).start()).rejects.toThrow(/not a socket/);
  });

  it('sends a snapshot on subscribe, then deltas to every subscribed client', async () => {
    const server = await startServer();
    const a = await client(server);
    const b = await client(server);
    const before = await listenTcp('127.0.0.1');
    const snapshot = await a.peer.request('ports.subscribe', {});
    const beforePort = (before.address() as AddressInfo).port;
    expect(snapshot.listeners.find((l) => l.port === beforePort)).toMatchObject({ ip: '127.0.0.1', pid: process.pid });
    await b.peer.request('ports.subscribe', {});

    const after = await listenTcp('::1');
    const port = (after.address() as AddressInfo).port;
    const seen = await waitFor(() => addedPort(a.events['ports.delta'], port), { what: `delta adding ${port}` });
    expect(seen).toEqual({ proto: 'tcp', family: 6, ip: '::1', port, pid: process.pid, command: expect.any(String) });
    await waitFor(() => addedPort(b.events['ports.delta'], port), { what: 'second client delta' });
    expect(a.events['ports.delta']?.[0].seq).toBeGreaterThan(snapshot.seq);
    expect(server.clients).toBe(2);
  });

  it('tells the client that asked, and only it, when a socket path it watches appears', async () => {
    const server = await startServer();
    const a = await client(server, ['sockets.changed']);
    const b = await client(server, ['sockets.changed']);
    const path = join(dir, 'docker.sock');
    expect(await a.peer.request('sockets.watch', { paths: [path] })).toEqual({});
    const daemon = createServer().listen(path);
    await once(daemon, 'listening');
    cleanups.push(() => new Promise((r) => daemon.close(r)));
    await waitFor(() => a.events['sockets.changed']?.length === 1, { what: 'sockets.changed', timeoutMs: 5_000 });
    expect(a.events['sockets.changed']).toEqual([{ path }]);
    expect(b.events['sockets.changed']).toEqual([]);
    await expect(a.peer.request('sockets.watch', { paths: ['relative.sock'] })).rejects.toThrow(/paths/);
  });

  it('closes a client sending garbage and keeps serving the others', async () => {
    const server = await startServer();
    const good = await client(server);
    await good.peer.request('ports.subscribe', {});

    const bad = connect(server.socketPath);
    await once(bad, 'connect');
    bad.resume(); // read (and drop) the agent's hello so that its close reaches us
    bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])); // announces a 4 GiB frame
    await once(bad, 'close');
    await waitFor(() => logs.find((l) => l.msg === 'client closed' && /exceeds the maximum/.test(String(l.reason))), {
      what: 'close reason in the log',
    });

    const s = await listenTcp('127.0.0.1');
    const port = (s.address() as AddressInfo).port;
    await waitFor(() => addedPort(good.events['ports.delta'], port), { what: 'delta after the bad client' });
    expect(good.peer.closed).toBe(false);
  });

  it('closes a client that sends an fs path escaping its root', async () => {
    const server = await startServer({ fs: { isMount: () => true } });
    const other = await client(server);
    const c = await client(server);
    c.peer.notify('fs.events', { root: dir, events: [{ path: '../etc/passwd', kind: 'change' }] });
    await once(c.peer, 'close');
    expect(logs.find((l) => l.msg === 'client closed' && /\.\./.test(String(l.reason)))).toBeDefined();
    expect(await other.peer.request('info', {})).toMatchObject({ pid: process.pid });
  });
});
