// Splices one accepted host connection to one guest channel: TCP_NODELAY, half-close both ways, errors close both
// ends, a channel cut off by a lost SSH connection resets the client instead of ending it, backpressure both ways
// (a client that does not read stops the guest's window; a guest window that is used up pauses the client), counters.
// Owns nothing beyond the two ends of one connection.
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ChannelSink, GuestChannel } from '../ssh/direct-channel.js';
import type { ForwardStats, OpenChannel } from './binding.js';

export interface BridgeOptions {
  /** For log lines, e.g. `127.0.0.1:8080 → guest 127.0.0.1:8080`. */
  label: string;
  stats: ForwardStats;
  log: Logger;
  /** How the channel open went: null once it is open, else why not (the forward's state may depend on it). */
  opened?: (err: Error | null) => void;
}

/**
 * Opens the channel (the caller may queue `open` to bound concurrency) and splices. The client socket stays paused
 * until `open` is let through (early client bytes wait in the kernel meanwhile); from then until the channel is
 * ready, one chunk is read ahead, so the client's first bytes go out in the same turn as the channel's confirmation
 * instead of a poll later.
 */
export function bridge(socket: Socket, open: OpenChannel, opts: BridgeOptions): void {
  socket.setNoDelay(true);
  const splice = new Splice(socket, opts);
  open(splice, () => splice.readAhead()).then(
    (channel) => splice.attach(channel),
    (err: Error) => splice.failed(err),
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

/** One connection's two ends. The guest side arrives as sink calls, which may start before `attach`. */
class Splice implements ChannelSink {
  private channel: GuestChannel | null = null;
  /** No more traffic either way: the guest closed the channel, or the client went away (the channel is closed). */
  private done = false;
  private guestEnded = false;
  private reading = false;
  /** Client bytes read before the channel was ready, and whether the client's EOF came with them. */
  private early: Buffer[] = [];
  private clientEnded = false;

  constructor(
    private readonly socket: Socket,
    private readonly opts: BridgeOptions,
  ) {
    opts.stats.connections++;
    socket.on('error', (err) => this.clientGone('client error', err));
    socket.on('close', () => this.clientGone('client closed'));
  }

  /** Starts reading the client; until `attach` a chunk read pauses it again. */
  readAhead(): void {
    if (this.reading || this.done) return;
    this.reading = true;
    const { socket } = this;
    socket.on('data', (chunk: Buffer) => this.fromClient(chunk));
    socket.on('drain', () => this.channel?.resume());
    // The client's half-close ends our side of the channel; the guest may still answer.
    socket.on('end', () => {
      this.clientEnded = true;
      if (!this.done) this.channel?.end();
    });
    socket.resume();
  }

  attach(channel: GuestChannel): void {
    if (this.done) {
      channel.close();
      return;
    }
    this.channel = channel;
    this.opts.opened?.(null);
    this.readAhead();
    let open = true;
    for (const chunk of this.early) open = channel.write(chunk);
    this.early = [];
    if (this.clientEnded) channel.end();
    else if (open) this.socket.resume();
  }

  private fromClient(chunk: Buffer): void {
    // After the guest's CLOSE the bytes have nowhere to go; the reply still drains to the client.
    if (this.done) return;
    this.opts.stats.bytesIn += chunk.length;
    const { channel } = this;
    if (!channel) {
      this.early.push(chunk);
      this.socket.pause();
    } else if (!channel.write(chunk)) {
      this.socket.pause();
    }
  }

  failed(err: Error): void {
    this.opts.opened?.(err);
    if (this.finish()) return;
    const { label, log } = this.opts;
    // The forward warns (throttled) through `opened`; this line has the connection's own addresses.
    log.debug({ err: err.message, forward: label }, `cannot forward connection ${label}: ${err.message}`);
    // Reset rather than FIN so the client sees a failed connect, not an empty reply.
    reset(this.socket);
  }

  // ── the guest side (ChannelSink) ────────────────────────────────────────────────────────────────────────────────

  data(chunk: Buffer): boolean {
    if (this.socket.destroyed) return false;
    this.opts.stats.bytesOut += chunk.length;
    return this.socket.write(chunk);
  }

  end(): void {
    this.guestEnded = true;
    if (!this.socket.destroyed) this.socket.end();
  }

  close(lost: boolean): void {
    if (this.finish()) return;
    const { socket, opts } = this;
    if (lost && !this.guestEnded) {
      opts.log.debug({ forward: opts.label }, `connection ${opts.label} reset: its SSH connection was lost`);
      reset(socket);
      return;
    }
    if (socket.destroyed) return;
    socket.end();
    // A socket paused for a channel that will never drain again must still read, or the client's FIN would go
    // unnoticed and the socket would stay open for good.
    socket.resume();
  }

  drain(): void {
    this.socket.resume();
  }

  // ────────────────────────────────────────────────────────────────────────────────────────────────────────────────

  private clientGone(why: string, err?: Error): void {
    if (this.finish()) return;
    const { label, log } = this.opts;
    if (err) log.debug({ err: err.message, forward: label }, `connection ${label} ${why}: ${err.message}`);
    this.socket.destroy();
    // Not attached yet: attach() closes the channel when it arrives.
    this.channel?.close();
  }

  /** Marks the connection done and uncounts it; true when it already was. */
  private finish(): boolean {
    if (this.done) return true;
    this.done = true;
    this.opts.stats.connections--;
    return false;
  }
}
