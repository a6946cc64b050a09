// Shared setup of the forwarding integration tests: a HostAgent in this process against the testbed guest, guest
// servers (node scripts run in the guest namespace), and host-side clients. Owns the agent and the guest processes it
// starts (stopped by pid).
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostAgent, type HostAgentOptions } from '../../host/src/agent/index.js';
import { Config } from '../../host/src/config/schema.js';
import { createLogger } from '../../host/src/log.js';
import { type Testbed, testbedConfigInput } from './testbed.js';
import { waitFor } from './wait.js';

/** A guest server: `echo`, `sha` (replies sha256 of everything received, after EOF), `send N` (sends N pattern bytes). */
const GUEST_SERVER = `
const net = require('net'), crypto = require('crypto');
const [host, port, mode] = process.argv.slice(2);
${patternSource()}
const server = net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  if (mode === 'echo') return s.pipe(s);
  if (mode === 'sha') {
    const h = crypto.createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => s.end(h.digest('hex')));
    return;
  }
  let line = '';
  s.on('data', function first(d) {
    line += d;
    if (!line.includes('\\n')) return;
    s.off('data', first);
    const total = Number(line.trim());
    let k = 0, sent = 0;
    const pump = () => {
      while (sent < total) {
        const b = block(k++).subarray(0, Math.min(BLOCK, total - sent));
        sent += b.length;
        if (!s.write(b)) return s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
});
server.listen({ host, port: Number(port), ipv6Only: host.includes(':') }, () => console.log('listening'));
`;

const UDP_ECHO = `
const dgram = require('dgram');
const [host, port] = process.argv.slice(2);
// A receive buffer deep enough for the burst test: what a guest server's own buffer drops is not tether's doing.
const s = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host.includes(':'), recvBufferSize: 1 << 20 });
s.on('message', (m, r) => s.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
s.bind(Number(port), host, () => console.log('listening'));
`;

/** The pattern both sides agree on: 64 KiB blocks, block k a rotation of a fixed pseudo-random base. */
function patternSource(): string {
  return `
const BLOCK = 65536;
const base = (() => { const parts = []; let h = Buffer.from('tether');
  for (let i = 0; i < BLOCK / 32; i++) { h = crypto.createHash('sha256').update(h).digest(); parts.push(h); }
  return Buffer.concat(parts); })();
const block = (k) => { const o = (k * 7919) % BLOCK; return Buffer.concat([base.subarray(o), base.subarray(0, o)]); };`;
}

// The same pattern on the host side, evaluated from the same source.
const pattern = new Function('crypto', `${patternSource()}; return { BLOCK, block };`)(await import('node:crypto')) as {
  BLOCK: number;
  block: (k: number) => Buffer;
};

export function patternSha(total: number): string {
  const h = createHash('sha256');
  for (let k = 0, sent = 0; sent < total; k++) {
    const b = pattern.block(k).subarray(0, Math.min(pattern.BLOCK, total - sent));
    sent += b.length;
    h.update(b);
  }
  return h.digest('hex');
}

/** Writes `total` pattern bytes to `socket` with backpressure, then ends it. */
export async function sendPattern(socket: net.Socket, total: number): Promise<void> {
  for (let k = 0, sent = 0; sent < total; k++) {
    const b = pattern.block(k).subarray(0, Math.min(pattern.BLOCK, total - sent));
    sent += b.length;
    if (!socket.write(b)) await new Promise((r) => socket.once('drain', r));
  }
  socket.end();
}

export interface Harness {
  agent: HostAgent;
  instanceDir: string;
  stop(): Promise<void>;
}

export function testConfig(tb: Testbed, extra: Record<string, unknown> = {}): Config {
  return Config.parse({
    ...testbedConfigInput(tb, { ssh: { keepaliveInterval: 1, keepaliveCountMax: 3 } }),
    ...extra,
  });
}

/** Starts a HostAgent in-process (logs in <instanceDir>/logs) and waits for its boot requirements. */
export async function startAgent(
  tb: Testbed,
  extra: Record<string, unknown> = {},
  opts: Partial<HostAgentOptions> = {},
) {
  const instanceDir = mkdtempSync(join(tmpdir(), 'tether-fwd-'));
  const logger = await createLogger({ dir: join(instanceDir, 'logs'), level: 'debug' });
  const agent = new HostAgent('test', testConfig(tb, extra), {
    instanceDir,
    logger,
    requirementTimeoutMs: 60_000,
    ssh: { backoffInitialMs: 100, backoffMaxMs: 1_000 },
    ...opts,
  });
  await agent.start();
  const harness: Harness = {
    agent,
    instanceDir,
    async stop() {
      const pid = agent.link.info?.pid;
      await agent.stop('test finished');
      if (pid) await killGuestAgent(tb, pid);
      rmSync(instanceDir, { recursive: true, force: true });
    },
  };
  return harness;
}

export async function killGuestAgent(tb: Testbed, pid: number, signal = 'TERM'): Promise<void> {
  await tb.exec(`kill -${signal} ${pid} 2>/dev/null; true`);
}

/** Runs a guest server script in the guest namespace as the login user; resolves once it listens. */
export async function guestServer(
  tb: Testbed,
  kind: 'tcp' | 'udp',
  host: string,
  port: number,
  mode = 'echo',
): Promise<ChildProcess> {
  const file = join(tb.guestDir, kind === 'tcp' ? 'server.cjs' : 'udp-echo.cjs');
  writeFileSync(file, kind === 'tcp' ? GUEST_SERVER : UDP_ECHO);
  const child = tb.spawn('node', [file, host, String(port), mode], { user: tb.user });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d;
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d;
  });
  await waitFor(() => out.includes('listening') || child.exitCode !== null, { what: `guest server ${host}:${port}` });
  if (child.exitCode !== null) throw new Error(`guest server ${host}:${port} exited: ${out}`);
  return child;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Connects, sends `data`, half-closes, and returns everything received until the server closes. */
export function roundTrip(host: string, port: number, data: string | Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host, port }, () => s.end(data));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

/** Resolves with the error code of a connect attempt (null when it connected). */
export function connectError(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(null);
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** One line of the agent's JSON log (<instanceDir>/logs/current.log). */
export interface LogLine {
  level: number;
  component?: string;
  msg: string;
  [key: string]: unknown;
}

/** The agent's log lines so far (pino writes asynchronously: poll with waitFor when a line is expected). */
export function logLines(instanceDir: string): LogLine[] {
  let text: string;
  try {
    text = readFileSync(join(instanceDir, 'logs', 'current.log'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as LogLine];
      } catch {
        return []; // a line still being written
      }
    });
}
