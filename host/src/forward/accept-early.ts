// Work on an accepted TCP connection before Node builds its net.Socket. A forwarded connection's first need is its
// channel open, which takes only the client's address; building the Socket (stream state, handle wiring) took
// 20-40 µs in the agent, and the open waited for it. Here the listening handle's accept callback asks for the
// client's address itself, starts the open, and only then lets Node build the Socket, which the server's
// 'connection' listener then claims.
//
// Where the caller can drive the connection through its handle (client-end.ts), `adopt` takes the handle and no
// Socket is built at all.
//
// This relies on two Node internals unchanged since Node 0.x: the listening handle (`server._handle`) calls its
// `onconnection(err, clientHandle)` for every accepted connection and builds the Socket synchronously inside it, and
// a TCP handle answers `getpeername(out)`. Where either is missing, nothing is hooked and every connection takes the
// ordinary path (`claim` returns undefined).
import type net from 'node:net';

export interface ClientAddr {
  address: string;
  port: number;
}

interface ClientHandle {
  getpeername?(out: Partial<ClientAddr>): number;
}

type OnConnection = (this: unknown, err: number, client: ClientHandle | undefined) => unknown;

/**
 * Calls `start(peer)` for each connection `server` accepts, before its Socket exists; returns `claim`, which the
 * server's 'connection' listener calls with the new Socket to get what `start` returned for it. A value nobody
 * claimed (Node closed the connection without emitting it) goes to `drop`. When `adopt(handle, value)` returns true
 * it has taken the accepted handle, and Node builds no Socket for it. Call once the server listens.
 */
export function acceptEarly<T>(
  server: net.Server,
  start: (peer: ClientAddr) => T | undefined,
  drop: (value: T) => void,
  adopt?: (client: unknown, value: T) => boolean,
): (socket: net.Socket) => T | undefined {
  const handle = (server as unknown as { _handle?: { onconnection?: OnConnection } })._handle;
  const original = handle?.onconnection;
  if (!handle || typeof original !== 'function') return () => undefined;
  let pending: { client: ClientHandle; value: T } | null = null;
  handle.onconnection = function (this: unknown, err, client) {
    const peer = err || !client ? null : peerOf(client);
    if (client && peer) {
      try {
        const value = start(peer);
        if (value !== undefined) {
          if (adopt?.(client, value)) return;
          pending = { client, value };
        }
      } catch {
        // Thrown here it would end the process (this runs straight from libuv); the ordinary path takes over.
      }
    }
    try {
      return original.call(this, err, client);
    } finally {
      const unclaimed = pending;
      pending = null;
      if (unclaimed) drop(unclaimed.value);
    }
  };
  return (socket) => {
    const claimed = pending;
    if (!claimed || (socket as unknown as { _handle?: unknown })._handle !== claimed.client) return undefined;
    pending = null;
    return claimed.value;
  };
}

function peerOf(client: ClientHandle): ClientAddr | null {
  if (typeof client.getpeername !== 'function') return null;
  const out: Partial<ClientAddr> = {};
  if (client.getpeername(out) !== 0 || typeof out.address !== 'string' || typeof out.port !== 'number') return null;
  return { address: out.address, port: out.port };
}
