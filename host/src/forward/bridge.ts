// Splices one accepted host connection to one guest channel: TCP_NODELAY, half-close both ways, errors close both
// ends, a channel cut off by a lost SSH connection resets the client instead of ending it, backpressure both ways
// (a client that does not read stops the guest's window; a guest window that is used up pauses the client), counters.
// Owns nothing beyond the two ends of one connection.
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ChannelSink, GuestChannel } from '../ssh/direct-channel.js';
import type { ForwardStats, OpenChannel } from './binding.js';
import { type ClientEnd, type ClientSink, socketEnd } from './client-end.js';

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
  openBridge(open, opts).connect(socketEnd(socket));
}

/** A bridge whose channel open has started before the client's end exists (see accept-early.ts). */
export interface PendingBridge {
  /** The client's end; until then nothing is read or written on the client side. */
  connect(client: ClientEnd): void;
  /** No socket will come (Node dropped the accepted connection): the channel is closed once it opens. */
  cancel(): void;
}

/** `bridge` in two steps: the channel open goes out now, the client socket joins with `connect`. */
export function openBridge(open: OpenChannel, opts: BridgeOptions): PendingBridge {
  const splice = new Splice(opts);
  open(splice, () => splice.readAhead()).then(
    (channel) => splice.attach(channel),
    (err: Error) => splice.failed(err),
  );
  return splice;
}

/**
 * How long a client socket stays open, reading and dropping what the client sends, after the guest closed the channel
 * and the reply has gone to the kernel, unless the client ends first. Then it is closed, and a client still sending
 * gets a reset (EPIPE), as from a service that exited, instead of writing into nothing until it gives up (`ssh -L`
 * closes at once). Not at once: bytes a client sends after the close make the kernel reset the connection and drop
 * the reply it has not read yet, and a client often reads only once its request is out (an HTTP upload answered
 * early); web servers linger alike.
 */
const LINGER_MS = 2_000;

/** One connection's two ends. The guest side arrives as sink calls, which may start before `attach`. */
class Splice implements ChannelSink, PendingBridge {
  private socket: ClientEnd | null = null;
  /** The linger timer (see LINGER_MS), cleared when the client closes first. */
  private lingering: NodeJS.Timeout | null = null;
  private channel: GuestChannel | null = null;
  /** No more traffic either way: the guest closed the channel, or the client went away (the channel is closed). */
  private done = false;
  private guestEnded = false;
  private reading = false;
  /** `readAhead` came before the socket did. */
  private readWanted = false;
  /** Client bytes read before the channel was ready, and whether the client's EOF came with them. */
  private early: Buffer[] = [];
  private clientEnded = false;

  constructor(private readonly opts: BridgeOptions) {
    opts.stats.connections++;
  }

  connect(client: ClientEnd): void {
    this.socket = client;
    client.start(new ClientSide(this));
    if (this.readWanted) this.readAhead();
  }

  cancel(): void {
    if (this.finish()) return;
    this.channel?.close();
  }

  /** Starts reading the client; until `attach` a chunk read pauses it again. */
  readAhead(): void {
    const { socket } = this;
    if (!socket) {
      this.readWanted = true;
      return;
    }
    if (this.reading || this.done) return;
    this.reading = true;
    socket.resume();
  }

  /** The channel, as soon as the guest confirms it (ChannelSink), and again once the open settles (a no-op then). */
  opened(channel: GuestChannel): void {
    this.attach(channel);
  }

  attach(channel: GuestChannel): void {
    if (this.channel === channel) return;
    if (this.done) {
      channel.close();
      return;
    }
    this.channel = channel;
    // The client's first bytes (and a request-only client's EOF) go to the guest before anything else runs: the
    // connection waits on them.
    let open = true;
    for (const chunk of this.early) {
      this.opts.stats.bytesIn += chunk.length;
      open = channel.write(chunk);
    }
    this.early = [];
    if (this.clientEnded) channel.end();
    channel.flush();
    this.readAhead();
    if (!this.clientEnded && open) this.socket?.resume();
    this.opts.opened?.(null);
  }

  // ── the client side (through ClientSide) ────────────────────────────────────────────────────────────────────────

  fromClient(chunk: Buffer): void {
    // After the guest's CLOSE the bytes have nowhere to go; the reply still drains to the client.
    if (this.done) return;
    const { channel } = this;
    // Counted once they go into the channel: bytes of a connection whose channel never opens reach nobody.
    if (!channel) {
      this.early.push(chunk);
      this.socket?.pause();
      return;
    }
    this.opts.stats.bytesIn += chunk.length;
    if (!channel.write(chunk)) this.socket?.pause();
  }

  /** The client's half-close ends our side of the channel; the guest may still answer. */
  clientEOF(): void {
    this.clientEnded = true;
    if (!this.done) this.channel?.end();
  }

  clientDrained(): void {
    this.channel?.resume();
  }

  failed(err: Error): void {
    this.opts.opened?.(err);
    if (this.finish()) return;
    const { label, log } = this.opts;
    // The forward warns (throttled) through `opened`; this line has the connection's own addresses.
    log.debug({ err: err.message, forward: label }, `cannot forward connection ${label}: ${err.message}`);
    // Reset rather than FIN so the client sees a failed connect, not an empty reply.
    this.socket?.reset();
  }

  // ── the guest side (ChannelSink) ────────────────────────────────────────────────────────────────────────────────

  data(chunk: Buffer): boolean {
    const { socket } = this;
    if (!socket || socket.destroyed) return false;
    this.opts.stats.bytesOut += chunk.length;
    return socket.write(chunk);
  }

  end(): void {
    this.guestEnded = true;
    const { socket } = this;
    if (!socket || socket.destroyed) return;
    // Both directions are done and every byte is with the kernel: closing the socket sends the FIN at once, where
    // end() leaves its shutdown(2) to libuv's next pending phase, after everything else this turn does. The client's
    // EOF has been read, so nothing unread is left to turn the close into a reset.
    if (this.clientEnded && socket.writableLength === 0) socket.destroy();
    else socket.end();
  }

  close(lost: boolean): void {
    if (this.finish()) return;
    const { socket, opts } = this;
    if (!socket) return;
    if (lost && !this.guestEnded) {
      opts.log.debug({ forward: opts.label }, `connection ${opts.label} reset: its SSH connection was lost`);
      socket.reset();
      return;
    }
    if (socket.destroyed) return;
    // Nothing the client sends can go anywhere now. It reads on meanwhile (also a socket paused for the channel), and
    // bytes it sends are dropped, so that what it still has to read is not cut off by a reset (see LINGER_MS).
    socket.resume();
    if (this.clientEnded && socket.writableLength === 0) socket.destroy();
    else socket.end(() => this.linger());
  }

  drain(): void {
    this.socket?.resume();
  }

  // ────────────────────────────────────────────────────────────────────────────────────────────────────────────────

  clientGone(why: string, err?: Error): void {
    if (this.lingering) clearTimeout(this.lingering);
    this.lingering = null;
    if (this.finish()) return;
    const { label, log } = this.opts;
    if (err) log.debug({ err: err.message, forward: label }, `connection ${label} ${why}: ${err.message}`);
    this.socket?.destroy();
    // Not attached yet: attach() closes the channel when it arrives.
    this.channel?.close();
  }

  private linger(): void {
    const { socket } = this;
    if (!socket || socket.destroyed) return;
    this.lingering = setTimeout(() => socket.destroy(), LINGER_MS);
  }

  /** Marks the connection done and uncounts it; true when it already was. */
  private finish(): boolean {
    if (this.done) return true;
    this.done = true;
    this.opts.stats.connections--;
    return false;
  }
}

/** The Splice's client-side events, apart from its ChannelSink methods of the same names. */
class ClientSide implements ClientSink {
  constructor(private readonly splice: Splice) {}

  data(chunk: Buffer): void {
    this.splice.fromClient(chunk);
  }

  end(): void {
    this.splice.clientEOF();
  }

  drain(): void {
    this.splice.clientDrained();
  }

  error(err: Error): void {
    this.splice.clientGone('client error', err);
  }

  closed(): void {
    this.splice.clientGone('client closed');
  }
}
