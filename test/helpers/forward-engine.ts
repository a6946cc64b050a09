// The forward engine's unit tests' guest: a fake SSH session whose channels are connections to a local echo server
// (or refused, as the test says), the log lines the engine wrote, and helpers to make engines, listeners and clients.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import type { Listener } from '@tether/protocol';
import { pino } from 'pino';
import { afterEach, beforeAll, expect, vi } from 'vitest';
import { ForwardEngine } from '../../host/src/forward/engine.js';
import type { ChannelSink, GuestChannel } from '../../host/src/ssh/direct-channel.js';
import { ChannelOpenError, type SshSession } from '../../host/src/ssh/index.js';

export const lines: { msg: string; level: number; forward?: string; state?: string }[] = [];
export const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });

let echoPort = 0;
/** The guest ports connections were sent to, in order. */
export const dialed: number[] = [];
/** The guest addresses channel opens asked for, refused ones included, in order. */
export const tried: string[] = [];
/** Guest addresses whose connections the "guest" refuses, as sshd reports a refused connect. */
export const refusing = new Set<string>();
/** Guest ports the "guest's sshd" may not open channels to (AllowTcpForwarding no, PermitOpen). */
export const prohibited = new Set<number>();
/**
 * A "channel" that is a plain connection to the echo server, delivering to the sink as a DirectChannel would; every
 * guest socket listens (its probe opens and closes at once).
 */
/** Guest ports whose channel opens wait until the test refuses them (refuseHeld). */
export const holding = new Set<number>();
export const held: (() => void)[] = [];
const refusal = () => {
  const cause = Object.assign(new Error('(SSH) Channel open failure: Connection refused'), { reason: 2 });
  return new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause);
};
export const fakeSsh = {
  openStreamLocal: async () => ({ destroy: () => {} }),
  openDirect: (target: { dstIP: string; dstPort: number }, sink: ChannelSink) =>
    new Promise<GuestChannel>((resolve, reject) => {
      tried.push(target.dstIP);
      if (holding.has(target.dstPort)) {
        held.push(() => reject(refusal()));
        return;
      }
      if (refusing.has(target.dstIP)) {
        const cause = Object.assign(new Error('(SSH) Channel open failure: Connection refused'), { reason: 2 });
        reject(new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause));
        return;
      }
      if (prohibited.has(target.dstPort)) {
        const cause = Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason: 1 });
        reject(new ChannelOpenError(`cannot open a channel: ${cause.message}`, cause));
        return;
      }
      dialed.push(target.dstPort);
      const s = net.connect({ host: '127.0.0.1', port: echoPort, allowHalfOpen: true }, () =>
        resolve({
          write: (chunk) => s.write(chunk),
          end: () => s.end(),
          close: () => s.destroy(),
          resume: () => s.resume(),
          flush: () => undefined,
        }),
      );
      s.once('error', reject);
      s.on('data', (d: Buffer) => {
        if (!sink.data(d)) s.pause();
      });
      s.on('drain', () => sink.drain());
      s.on('end', () => sink.end());
      s.on('close', () => sink.close(false));
    }),
} as unknown as SshSession;

/** Resolves once `ok()` holds (polling, as the engine settles asynchronously). */
export const waitUntil = (ok: () => boolean) =>
  vi.waitFor(() => {
    if (!ok()) throw new Error('not yet');
  });

/** A host program holding `port` on `host`. */
export async function holdPort(port: number, host: string): Promise<net.Server> {
  const held = net.createServer();
  await new Promise<void>((resolve) => held.listen(port, host, resolve));
  return held;
}

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export const tcp = (ip: string, port: number): Listener => ({
  proto: 'tcp',
  family: ip.includes(':') ? 6 : 4,
  ip,
  port,
  pid: 42,
  command: 'srv',
});

export function echo(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const s = net.connect({ host, port }, () => s.end('hi'));
    s.on('data', (d) => {
      out += d;
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

/** Echoes through host `port` while the guest's 127.0.0.1 refuses; resolves with the guest addresses tried. */
export async function triedWhile127Refuses(port: number): Promise<string[]> {
  refusing.add('127.0.0.1');
  tried.length = 0;
  try {
    expect(await echo(port)).toBe('hi');
    return [...tried];
  } finally {
    refusing.clear();
  }
}

/** Starts the echo server that the fake guest's channels connect to (once per test file). */
async function startEcho(): Promise<void> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  server.unref();
  echoPort = (server.address() as net.AddressInfo).port;
}

/** Runs the echo server for a describe block, and stops each test's engine (`current`) after it. */
export function engineEachTest(current: () => ForwardEngine | undefined): void {
  beforeAll(startEcho);
  afterEach(async () => {
    await current()?.stop();
    lines.length = 0;
  });
}

/** An engine with no rules over the fake guest. */
export const makeEngine = (maxForwards = 4096, hostSshPort?: number) =>
  new ForwardEngine({ ssh: fakeSsh, portForwards: [], maxForwards, instanceDir: '/tmp', logger, hostSshPort });

/** A detected 0.0.0.0 listener on `engine`, and one open host connection through its forward. */
export async function detectedWithConnection(engine: ForwardEngine) {
  const port = await freePort();
  await engine.setListeners([tcp('0.0.0.0', port)]);
  const held = net.connect({ host: '127.0.0.1', port });
  await once(held, 'connect');
  return { port, id: `tcp/0.0.0.0:${port}`, held };
}

/**
 * An outgoing connection to `serverPort` from a port below the kernel's ephemeral range, made by a process that does
 * not set SO_REUSEADDR (Node sets it on every socket it binds, which would let a listener in). A port the kernel
 * picked at connect would do, but on a busy machine other processes' connections reuse it, holding it past the test's
 * own. The process ends once the server closes the connection.
 */
export async function connectionFrom(serverPort: number): Promise<{ client: ChildProcess; port: number }> {
  const script = [
    'import socket, sys',
    's = socket.socket()',
    "s.bind(('127.0.0.1', int(sys.argv[1])))",
    "s.connect(('127.0.0.1', int(sys.argv[2])))",
    "print('connected', flush=True)",
    'while s.recv(1024): pass',
  ].join('\n');
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const client = spawn('python3', ['-c', script, String(port), String(serverPort)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const [first] = await Promise.race([once(client.stdout, 'data'), once(client, 'exit')]);
    if (String(first).startsWith('connected')) return { client, port };
    if (attempt === 5) throw new Error(`python3 could not connect from a fixed port (last tried ${port})`);
  }
}
