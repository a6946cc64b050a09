// Splices one accepted host connection to one guest channel: TCP_NODELAY, half-close both ways, errors destroy both
// ends, backpressure through pipe() (a slow reader stalls the SSH window instead of growing buffers), counters.
// Owns nothing beyond the two streams of one connection.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import type { ForwardStats, OpenChannel } from './binding.js';

export interface BridgeOptions {
  /** For log lines, e.g. `127.0.0.1:8080 → guest 127.0.0.1:8080`. */
  label: string;
  stats: ForwardStats;
  log: Logger;
}

/**
 * Opens the channel (the caller may queue `open` to bound concurrency) and splices. The client socket stays paused
 * until the channel is ready, so early client bytes wait in the kernel.
 */
export function bridge(socket: Socket, open: OpenChannel, opts: BridgeOptions): void {
  const { stats, log, label } = opts;
  if (typeof socket.setNoDelay === 'function') socket.setNoDelay(true);
  stats.connections++;
  let clientGone = false;
  const onEarlyError = () => {
    clientGone = true;
  };
  socket.once('error', onEarlyError);
  socket.once('close', onEarlyError);

  let counted = true;
  const release = () => {
    if (!counted) return;
    counted = false;
    stats.connections--;
  };

  open().then(
    (channel) => {
      socket.off('error', onEarlyError);
      socket.off('close', onEarlyError);
      if (clientGone || socket.destroyed) {
        release();
        channel.destroy();
        return;
      }
      splice(socket, channel, stats, log, label, release);
    },
    (err: Error) => {
      release();
      log.warn({ err: err.message, forward: label }, `cannot forward connection ${label}: ${err.message}`);
      // Reset rather than FIN so the client sees a failed connect, not an empty reply.
      if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed && socket.remoteAddress) {
        socket.resetAndDestroy();
      } else {
        socket.destroy();
      }
    },
  );
}

function splice(socket: Socket, channel: Duplex, stats: ForwardStats, log: Logger, label: string, release: () => void) {
  let finished = false;
  const teardown = (why: string, err?: Error) => {
    if (finished) return;
    finished = true;
    release();
    if (err) log.debug({ err: err.message, forward: label }, `connection ${label} ${why}: ${err.message}`);
    socket.destroy();
    channel.destroy();
  };
  socket.on('error', (err) => teardown('client error', err));
  channel.on('error', (err: Error) => teardown('channel error', err));
  // pipe() ends the destination when the source ends: that is the half-close propagation in both directions.
  socket.pipe(channel);
  channel.pipe(socket);
  socket.on('data', (chunk: Buffer) => {
    stats.bytesIn += chunk.length;
  });
  channel.on('data', (chunk: Buffer) => {
    stats.bytesOut += chunk.length;
  });
  // Once the channel is fully closed nothing more can flow; let the socket finish writing what it has.
  channel.on('close', () => {
    if (!finished) {
      finished = true;
      release();
      if (!socket.destroyed) socket.end();
    }
  });
  socket.on('close', () => {
    if (!finished) teardown('client closed');
    else channel.destroy();
  });
}
