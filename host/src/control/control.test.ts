// Control API server + client against a fake AgentApi over a real unix socket.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { forwardView } from '../../../test/helpers/forward-view.js';
import { Config } from '../config/schema.js';
import { DuplicateForwardError } from '../forward/errors.js';
import { silentLogger } from '../log.js';
import type { AgentApi, AgentEvent, ForwardSpec, ForwardView, StatusView } from '../model.js';
import { SocketBusyError } from '../socket-file.js';
import { AgentNotAnsweringError, AgentNotRunningError, ControlClient, ControlError } from './client.js';
import { type ControlServer, startControlServer } from './server.js';

function forward(id: string, port: number): ForwardView {
  return forwardView(port, { id, process: { pid: 7, command: 'python3 -m http.server' } });
}

class FakeAgent extends EventEmitter implements AgentApi {
  readonly name = 'fake';
  readonly config = Config.parse({ ssh: { user: 'dev' } });
  list = new Map<string, ForwardView>([['tcp/127.0.0.1:8080', forward('tcp/127.0.0.1:8080', 8080)]]);
  stopped: string | null = null;
  mountsWaiting = true;
  status(): StatusView {
    return { name: this.name, state: 'ready' } as StatusView;
  }
  forwards(): ForwardView[] {
    return [...this.list.values()];
  }
  mounts() {
    return [];
  }
  async addForward(spec: ForwardSpec): Promise<ForwardView> {
    if (spec.proto === 'unix') throw new DuplicateForwardError('vm', 'unix//run/a.sock', 'runtime');
    const f = { ...forward(`tcp/127.0.0.1:${spec.guestPort}`, spec.guestPort), source: 'runtime' as const };
    this.list.set(f.id, f);
    this.emit('event', { type: 'forward', forward: f } satisfies AgentEvent);
    return f;
  }
  async removeForward(id: string): Promise<void> {
    this.list.delete(id);
    this.emit('event', { type: 'forward-removed', id } satisfies AgentEvent);
  }
  async stop(reason: string): Promise<void> {
    this.stopped = reason;
  }
  retryMounts(): boolean {
    const was = this.mountsWaiting;
    this.mountsWaiting = false;
    return was;
  }
}

let dir: string;
let agent: FakeAgent;
let server: ControlServer;
let client: ControlClient;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tether-control-'));
  agent = new FakeAgent();
  server = await startControlServer({ socketPath: join(dir, 'ha.sock'), agent, log: silentLogger() });
  client = new ControlClient(server.socketPath);
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function raw(method: string, path: string, body?: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: server.socketPath, method, path }, (res) => {
      let text = '';
      res.on('data', (c) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('control API', () => {
  it('creates the socket owner-only', () => {
    expect(statSync(server.socketPath).mode & 0o777).toBe(0o600);
  });

  it('serves status, forwards and mounts', async () => {
    expect((await client.status()).state).toBe('ready');
    expect((await client.forwards()).map((f) => f.id)).toEqual(['tcp/127.0.0.1:8080']);
    expect(await client.mounts()).toEqual([]);
  });

  it('adds and removes forwards, with URL-encoded ids, and streams the events', async () => {
    const seen: AgentEvent[] = [];
    const sub = client.events((e) => seen.push(e));
    await sub.opened;
    const f = await client.addForward({ proto: 'tcp', hostPort: 9000, guestPort: 9000 });
    expect(f.source).toBe('runtime');
    await client.removeForward(f.id);
    expect(agent.list.has(f.id)).toBe(false);
    await expect.poll(() => seen.map((e) => e.type)).toEqual(['forward', 'forward-removed']);
    sub.close();
    // Without proto a port forward is TCP, as for `tether forward add`.
    const plain = await client.addForward({ hostPort: 9002, guestPort: 9002 } as never);
    expect(plain.proto).toBe('tcp');
    await client.removeForward(plain.id);
  });

  it('serves many event followers from one listener on the agent, and lets go of it when they leave', async () => {
    const seen: number[] = Array(15).fill(0);
    const subs = seen.map((_, i) => client.events(() => seen[i]++));
    await Promise.all(subs.map((s) => s.opened));
    expect(agent.listenerCount('event')).toBe(1);
    const f = await client.addForward({ proto: 'tcp', hostPort: 9004, guestPort: 9004 });
    await expect.poll(() => seen.every((n) => n >= 1)).toBe(true);
    for (const s of subs) s.close();
    await expect.poll(() => agent.listenerCount('event')).toBe(0);
    await client.removeForward(f.id);
  });

  it('answers bad requests with {error} and a status code', async () => {
    await expect(client.addForward({ proto: 'tcp', hostPort: 0, guestPort: 80 })).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/invalid forward: hostPort: /),
    });
    // Without a proto, and with a field of the wrong type: the field is named.
    await expect(client.addForward({ hostPort: 'x', guestPort: 80 } as never)).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/^invalid forward: hostPort: .*number/),
    });
    await expect(client.addForward({ proto: 'sctp', hostPort: 9001, guestPort: 80 } as never)).rejects.toMatchObject({
      status: 400,
      message: 'invalid forward: proto: expected "tcp", "udp" or "unix", got "sctp"',
    });
    await expect(client.removeForward('tcp/nope:1')).rejects.toMatchObject({
      status: 404,
      message: 'no forward with id tcp/nope:1',
    });
    await expect(client.addForward({ proto: 'unix', guestSocket: '/a', hostSocket: '/b' })).rejects.toMatchObject({
      status: 409,
      message: expect.stringMatching(/^forward unix\/\/run\/a\.sock already exists \(runtime\); remove it first/),
    });
    // Without proto, a body with a guestSocket is a unix forward (the fake agent refuses those as busy).
    await expect(client.addForward({ guestSocket: '/a', hostSocket: '/b' } as never)).rejects.toMatchObject({
      status: 409,
      message: expect.stringMatching(/^forward unix\/\/run\/a\.sock already exists \(runtime\); remove it first/),
    });
    expect(await raw('POST', '/v1/forwards', '{not json')).toMatchObject({ status: 400 });
    expect(await raw('GET', '/v1/nothing')).toEqual({
      status: 404,
      body: { error: 'no such endpoint: GET /v1/nothing' },
    });
    expect(await raw('PUT', '/v1/status')).toMatchObject({ status: 405 });
    expect(await raw('POST', '/v1/forwards', 'x'.repeat(100_000))).toMatchObject({ status: 413 });
  });

  it('asks the agent to retry its failed mounts, and says whether anything was waiting', async () => {
    expect(await client.retryMounts()).toBe(true);
    expect(await client.retryMounts()).toBe(false);
  });

  it('stops the agent on shutdown after replying, with the reason given', async () => {
    await client.shutdown('tether up: requirement 2 of 4 (host key) failed:\n  login refused');
    await expect
      .poll(() => agent.stopped)
      .toBe('tether up: requirement 2 of 4 (host key) failed: login refused (shutdown via control API)');
  });

  it('ends event streams when the server closes', async () => {
    let closedWith: string | null = null;
    const sub = client.events(
      () => {},
      (r) => {
        closedWith = r;
      },
    );
    await sub.opened;
    await server.close();
    await expect.poll(() => closedWith).not.toBeNull();
  });
});

describe('control client against an agent that does not answer', () => {
  it('gives up after its timeout with AgentNotAnsweringError, naming the socket', async () => {
    // Takes the connection and never replies, as an agent whose event loop is stuck or whose process is stopped.
    const socketPath = join(dir, 'stuck.sock');
    const held: Socket[] = [];
    const stuck = createServer((s) => void held.push(s));
    await new Promise<void>((r) => stuck.listen(socketPath, () => r()));
    try {
      const err = await new ControlClient(socketPath, 300).status().catch((e: Error) => e);
      expect(err).toBeInstanceOf(AgentNotAnsweringError);
      expect((err as Error).message).toBe(
        `the agent does not answer on ${socketPath} (no reply within 300 ms): it is stopped or stuck`,
      );
    } finally {
      for (const s of held) s.destroy();
      stuck.close();
    }
  });
});

describe('control socket lifecycle', () => {
  it('refuses to start when a live server answers on the socket', async () => {
    await expect(
      startControlServer({ socketPath: server.socketPath, agent, log: silentLogger() }),
    ).rejects.toBeInstanceOf(SocketBusyError);
    expect((await client.status()).state).toBe('ready');
  });

  it('replaces a stale socket nobody answers on', async () => {
    const path = join(dir, 'stale.sock');
    // A killed agent leaves its socket file behind: make one the same way.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ]);
    await new Promise((r) => child.stdout.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(statSync(path).isSocket()).toBe(true);
    const second = await startControlServer({ socketPath: path, agent, log: silentLogger() });
    expect((await new ControlClient(path).status()).state).toBe('ready');
    await second.close();
  });

  it('refuses a path that is not a socket', async () => {
    const path = join(dir, 'file');
    writeFileSync(path, 'x');
    await expect(startControlServer({ socketPath: path, agent, log: silentLogger() })).rejects.toThrow(
      /exists and is not a socket/,
    );
  });

  it('reports a missing agent as AgentNotRunningError', async () => {
    const c = new ControlClient(join(dir, 'none.sock'));
    await expect(c.status()).rejects.toBeInstanceOf(AgentNotRunningError);
    await expect(c.events(() => {}).opened).rejects.toBeInstanceOf(AgentNotRunningError);
    expect(ControlError).toBeDefined();
  });
});
