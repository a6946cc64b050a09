// Splices one accepted host connection to one guest channel: TCP_NODELAY, half-close both ways, errors destroy both
// ends, a channel cut off by a lost SSH connection resets the client instead of ending it, backpressure through
// a paused reader while the other side's writer is full (a slow reader stalls the SSH window instead of growing
// buffers), counters.
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
        closeChannel(channel);
        return;
      }
      splice(socket, channel, stats, log, label, release);
    },
    (err: Error) => {
      release();
      log.warn({ err: err.message, forward: label }, `cannot forward connection ${label}: ${err.message}`);
      // Reset rather than FIN so the client sees a failed connect, not an empty reply.
      reset(socket);
    },
  );
}

/** Closes the client connection with a TCP reset when possible, so it cannot mistake the end for a complete reply. */
function reset(socket: Socket): void {
  if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed && socket.remoteAddress) {
    socket.resetAndDestroy();
  } else {
    socket.destroy();
  }
}

/**
 * Closes a channel in both directions. ssh2's destroy() is end() plus close(), and end() on a channel already ended
 * builds an error nobody sees, stack trace included, which showed on every connection's teardown: an ended channel
 * only gets close().
 */
function closeChannel(channel: Duplex): void {
  const close = (channel as Duplex & { close?: () => void }).close;
  if (channel.writableEnded && typeof close === 'function') close.call(channel);
  else channel.destroy();
}

/** The part of ssh2's channel state (`incoming`/`outgoing`, untyped in @types/ssh2) that tells how a channel ended. */
interface ChannelSides {
  incoming?: { state?: string };
  outgoing?: { state?: string };
}

/**
 * Whether a channel's read side ended without the guest's EOF because the SSH connection went away. ssh2 ends every
 * open channel's read side when its connection closes (a keepalive timeout, a dead link) and emits no error, so to a
 * pipe it looks like the guest's EOF. The states tell them apart: the guest's EOF or CLOSE leaves `incoming` at `eof`,
 * or at `closed` together with `outgoing` (ssh2 answers a CLOSE with its own); a lost connection marks `incoming`
 * closed and cannot send anything, leaving `outgoing` open. Streams without these fields always count as a real EOF.
 */
function cutOff(channel: Duplex): boolean {
  const { incoming, outgoing } = channel as Duplex & ChannelSides;
  return incoming?.state === 'closed' && outgoing !== undefined && outgoing.state !== 'closed';
}

function splice(socket: Socket, channel: Duplex, stats: ForwardStats, log: Logger, label: string, release: () => void) {
  let finished = false;
  const teardown = (why: string, err?: Error) => {
    if (finished) return;
    finished = true;
    release();
    if (err) log.debug({ err: err.message, forward: label }, `connection ${label} ${why}: ${err.message}`);
    socket.destroy();
    closeChannel(channel);
  };
  const lost = () => {
    if (finished) return;
    finished = true;
    release();
    log.debug({ forward: label }, `connection ${label} reset: its SSH connection to the guest was lost`);
    reset(socket);
    closeChannel(channel);
  };
  socket.on('error', (err) => teardown('client error', err));
  channel.on('error', (err: Error) => teardown('channel error', err));
  // A hand-made splice rather than pipe(): pipe() hangs about a dozen listeners on each stream and re-runs its
  // bookkeeping per chunk, which showed as a measurable share of the per-connection cost. Backpressure is the same:
  // a full writer pauses the other side's reader until it drains.
  socket.on('data', (chunk: Buffer) => {
    // After the guest's CLOSE, ssh2 has ended the channel: the bytes have nowhere to go (the reply still drains to
    // the client).
    if (channel.writableEnded) return;
    stats.bytesIn += chunk.length;
    if (!channel.write(chunk)) socket.pause();
  });
  channel.on('drain', () => socket.resume());
  channel.on('data', (chunk: Buffer) => {
    stats.bytesOut += chunk.length;
    if (!socket.write(chunk)) channel.pause();
  });
  socket.on('drain', () => channel.resume());
  // The client's half-close ends the channel. The other direction ends the client only on the guest's EOF: a
  // channel cut off by a lost SSH connection resets it, or the client would take a truncated reply as whole.
  socket.on('end', () => {
    if (!finished) channel.end();
  });
  channel.on('end', () => {
    if (cutOff(channel)) lost();
    else if (!finished) socket.end();
  });
  socket.resume();
  // Once the channel is fully closed nothing more can flow; let the socket finish writing what it has.
  let channelClosed = false;
  channel.on('close', () => {
    channelClosed = true;
    if (cutOff(channel)) return lost();
    if (finished) return;
    finished = true;
    release();
    if (socket.destroyed) return;
    socket.end();
    // A socket paused for a channel that will never drain again must still read, or the client's FIN would go
    // unnoticed and the socket would stay open for good.
    socket.resume();
  });
  socket.on('close', () => {
    if (!finished) teardown('client closed');
    else if (!channelClosed) closeChannel(channel);
  });
}
