// Idle loopback TCP connections the guest agent keeps open so that reading a TCP table stops early. Owns choosing
// them and closing them; scanning does not know they exist (they are connections, never listeners).
//
// Why: a TCP table read ends just past the listeners (procnet.ts), but to end there the kernel must find the first
// other socket of this namespace and family, walking its established hash in bucket order. That hash is shared by all
// namespaces and sized by the machine's memory, so where the namespace has few connections (no IPv6 connection at all
// is common) the walk covers most of it: 1–2 ms per read on a 24 GiB machine, every time a listener opens or closes.
// A connection's bucket is random, and the table lists connections in bucket order; so of CANDIDATES connections
// opened, the ones listed first sit near the start of the hash, and keeping them bounds every later walk to a few
// percent of it (measured: 1.7 ms → 0.1 ms per read). Several are kept because a read that sees a few rows past the
// listeners (its size guessed from the last count) walks on to the one after those.

import { closeSync, openSync, readSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log.js';

const CANDIDATES = 32;
/**
 * A loopback that does not connect within this (a firewall dropping on lo) leaves the family without anchors. The
 * agent waits for the anchors before it scans, and loopback connects take microseconds.
 */
const OPEN_TIMEOUT_MS = 500;
/** Connections kept per family: the first ones the table lists. */
const KEEP = 3;

const FAMILIES = [
  { family: 4, host: '127.0.0.1', table: 'tcp' },
  { family: 6, host: '::1', table: 'tcp6' },
] as const;

interface Connection {
  client: Socket;
  peer: Socket;
}

export class TableAnchors {
  private constructor(private readonly kept: Connection[]) {}

  /** Opens the anchors of both families; a family that fails (no IPv6 loopback) goes without, with a debug line. */
  static async open(log: Logger, procRoot = '/proc'): Promise<TableAnchors> {
    const kept: Connection[] = [];
    for (const f of FAMILIES) {
      try {
        kept.push(...(await anchorFamily(f.host, join(procRoot, 'net', f.table))));
      } catch (err) {
        log.debug({ family: f.family, err }, 'no table anchors for this family');
      }
    }
    return new TableAnchors(kept);
  }

  get count(): number {
    return this.kept.length;
  }

  /** The kept connections as (client port, server port), for tests and diagnostics. */
  get ports(): { client: number; server: number }[] {
    return this.kept.map((c) => ({ client: c.client.localPort ?? 0, server: c.peer.localPort ?? 0 }));
  }

  close(): void {
    for (const c of this.kept) {
      c.client.resetAndDestroy();
      c.peer.destroy();
    }
    this.kept.length = 0;
  }
}

async function anchorFamily(host: string, tablePath: string): Promise<Connection[]> {
  const connections = await openConnections(host, CANDIDATES);
  let kept: Connection[] = [];
  try {
    kept = firstListed(tablePath, connections);
  } finally {
    // An abortive close leaves no TIME_WAIT socket behind, which would itself sit in the hash for a minute.
    for (const c of connections) {
      if (kept.includes(c)) continue;
      c.client.resetAndDestroy();
      c.peer.destroy();
    }
  }
  if (kept.length === 0) throw new Error(`none of ${CANDIDATES} loopback connections is listed in ${tablePath}`);
  return kept;
}

/** `count` connections to a listener on `host` that is closed again once they are accepted. */
async function openConnections(host: string, count: number): Promise<Connection[]> {
  const accepted = new Map<number, Socket>(); // by the client's port
  const server = createServer((socket) => {
    socket.on('error', () => {}); // an anchor that breaks is only lost
    accepted.set(socket.remotePort ?? 0, socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => resolve());
  });
  const { port } = server.address() as { port: number };
  const clients: Socket[] = [];
  const deadline = Date.now() + OPEN_TIMEOUT_MS;
  try {
    for (let i = 0; i < count; i++) {
      const socket = connect({ host, port });
      clients.push(socket);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no connection to ${host}:${port} within ${OPEN_TIMEOUT_MS} ms`)),
          deadline - Date.now(),
        );
        socket.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      socket.on('error', () => {});
    }
    while (accepted.size < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  } catch (err) {
    for (const socket of [...clients, ...accepted.values()]) socket.destroy();
    throw err;
  } finally {
    server.close();
  }
  const connections: Connection[] = [];
  for (const client of clients) {
    const peer = accepted.get(client.localPort ?? 0);
    if (peer) connections.push({ client, peer });
    else client.destroy();
  }
  for (const [port, peer] of accepted) if (!connections.some((c) => c.client.localPort === port)) peer.destroy();
  return connections;
}

/** The connections owning the first KEEP rows of ours in the table, in listing order. */
function firstListed(tablePath: string, connections: Connection[]): Connection[] {
  const byPort = new Map(connections.map((c) => [c.client.localPort ?? 0, c]));
  const serverPort = connections[0]?.peer.localPort;
  const kept: Connection[] = [];
  for (const line of tableLines(tablePath)) {
    const [, local, remote] = line.trim().split(/\s+/);
    if (!local || !remote) continue;
    const localPort = portOf(local);
    // The client end lists its own port as local; the accepted end lists it as remote.
    const c = byPort.get(localPort === serverPort ? portOf(remote) : localPort);
    if (!c || kept.includes(c)) continue;
    kept.push(c);
    if (kept.length === KEEP) break;
  }
  return kept;
}

/** The rows of a /proc/net table, read in chunks so that a namespace with many sockets is read only as far as needed. */
function* tableLines(path: string): Generator<string> {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(64 * 1024);
    let rest = '';
    let header = true;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) {
        if (rest) yield rest;
        return;
      }
      const lines = (rest + buf.toString('latin1', 0, n)).split('\n');
      rest = lines.pop() ?? '';
      if (header) lines.shift();
      header = false;
      yield* lines;
    }
  } finally {
    closeSync(fd);
  }
}

function portOf(address: string): number {
  return Number.parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
}
