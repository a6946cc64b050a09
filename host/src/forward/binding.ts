// What the forwarding engine needs from a host-side listener (TCP server, UDP socket, unix socket server), and the
// per-forward counters they update. The engine owns lifecycles; bindings own sockets.
import type net from 'node:net';
import type { Logger } from '../log.js';
import type { ChannelSink, GuestChannel } from '../ssh/direct-channel.js';

/** Per-forward counters. bytesIn: received from host clients; bytesOut: sent to host clients. */
export interface ForwardStats {
  connections: number;
  bytesIn: number;
  bytesOut: number;
}

/** Where a host binding sends what it accepts: one guest address (a wildcard already replaced by a loopback). */
export interface GuestTarget {
  /** The forward id, for logs. */
  id: string;
  guestIP: string;
  /** Tried when the guest refuses a connection to guestIP (the other loopback, for a `::` listener). */
  fallbackIP?: string;
  guestPort: number;
  stats: ForwardStats;
  /** Reports each channel open's outcome to the forward (see BridgeOptions.opened). */
  opened: (err: Error | null) => void;
}

/** Picks the guest target for traffic arriving on a binding of the given address family (null: none any more). */
export type Route = (family: 4 | 6) => GuestTarget | null;

/**
 * Opens a channel to the guest (direct-tcpip or direct-streamlocal) that delivers to `sink`; calls `started` when the
 * open is let through (past any queue), which is when the client may be read.
 */
export type OpenChannel = (sink: ChannelSink, started: () => void) => Promise<GuestChannel>;

export interface HostBinding {
  /** Display form: `127.0.0.1:8080`, `[::1]:8080` or a socket path. */
  readonly address: string;
  /** Starts listening; rejects with the errno error (EADDRINUSE, EACCES, EADDRNOTAVAIL, …). */
  listen(): Promise<void>;
  /** Stops listening; open connections are left to finish (they end with their SSH channels). */
  close(): Promise<void>;
}

/**
 * Listens; rejects with the errno error of the bind, and after a successful bind logs later server errors with the
 * address instead of letting them throw.
 */
export function listenServer(server: net.Server, opts: net.ListenOptions, address: string, log: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts, () => {
      server.off('error', reject);
      server.on('error', (err) => log.error({ err, address }, `listener ${address}: ${err.message}`));
      resolve();
    });
  });
}

/**
 * Stops accepting at once. Not waiting for server.close's callback on purpose: it fires only after every open
 * connection ended, and a half-open client would hold up the agent's shutdown.
 */
export function stopServer(server: net.Server): void {
  server.close();
}
