// Forwarding channels (direct-tcpip and direct-streamlocal) without ssh2's stream objects. For each channel ssh2
// builds a Duplex plus a stderr Readable and moves every chunk through Node's stream machinery (buffering, nextTick
// callbacks, autoDestroy), which was the largest share of the agent's CPU per forwarded connection. Here the channel
// is opened through ssh2's own protocol object, and its channel table holds a small object with exactly the fields
// ssh2's message handlers read and write, so ssh2 still parses, decrypts, windows and closes while data and ends go
// straight to a sink. Owns one channel's window bookkeeping (both directions) and its end states.
//
// This relies on ssh2 internals (`_protocol`, `_chanMgr`, the message handlers): ssh2 is pinned to one version in
// host/package.json, and direct-channel.test.ts checks this contract against it.
import type { Client } from 'ssh2';
import { flushWrites } from './coalesce.js';

/** ssh2's own values (lib/Channel.js): the window we grant, when we top it up, the largest packet we accept. */
const MAX_WINDOW = 2 * 1024 * 1024;
const WINDOW_THRESHOLD = MAX_WINDOW / 2;
const PACKET_SIZE = 32 * 1024;
/**
 * Channel data queued in the SSH socket (beyond what the kernel took) above which writers are told to wait. The
 * guest's windows alone would let every channel queue 2 MiB here: 8 MiB with 4 uploads, 400 MiB with 200. OpenSSH
 * stops reading its channels' sockets at 128 KiB of unsent output for the same reason.
 */
const OUTPUT_LIMIT = 256 * 1024;

/** Where a channel delivers what the guest sends. Called from ssh2's packet handlers, in order. */
export interface ChannelSink {
  /**
   * The guest confirmed the open: called with the channel while the confirmation is handled, before the open's
   * callback (and any promise settled from it) runs, so bytes waiting for the channel can go out in the same turn.
   */
  opened?(channel: GuestChannel): void;
  /** Guest bytes. Return false to stop topping up the guest's window until `resume()`. */
  data(chunk: Buffer): boolean;
  /** The guest's EOF: no more data will come. */
  end(): void;
  /**
   * The channel is closed. `lost`: the SSH connection went away (nothing the guest sent after the last `data` is
   * known to be complete), as opposed to the guest closing the channel.
   */
  close(lost: boolean): void;
  /** `write` returned false and the channel takes data again: its window is back and the SSH socket's queue drained. */
  drain(): void;
}

/** What a forwarded connection drives; implemented by DirectChannel. */
export interface GuestChannel {
  /**
   * Sends to the guest; false when part of it waits for window, or the SSH connection's queue is full: the caller
   * stops reading until the sink's `drain`.
   */
  write(chunk: Buffer): boolean;
  /** Our EOF, sent once anything held back has gone out. */
  end(): void;
  /** Closes both directions. */
  close(): void;
  /** Tops up the guest's window again after the sink's `data` returned false. */
  resume(): void;
  /** Sends what this turn's writes queued in the SSH socket now, not at the end of the turn (see flushWrites). */
  flush(): void;
}

export type DirectTarget =
  | { kind: 'tcp'; srcIP: string; srcPort: number; dstIP: string; dstPort: number }
  | { kind: 'unix'; socketPath: string };

type ChannelState = 'open' | 'eof' | 'closing' | 'closed';
interface Side {
  id: number;
  window: number;
  packetSize: number;
  state: ChannelState;
}

/** The part of ssh2's Protocol a forwarding channel uses. */
interface Protocol {
  channelData(id: number, data: Buffer): void;
  channelEOF(id: number): void;
  channelClose(id: number): void;
  channelWindowAdjust(id: number, amount: number): void;
  directTcpip(id: number, window: number, packetSize: number, cfg: object): void;
  openssh_directStreamLocal(id: number, window: number, packetSize: number, cfg: object): void;
  _handlers: Record<string, (...args: never[]) => void>;
}

interface ChannelTable {
  add(val: unknown): number;
  get(id: number): unknown;
  update(id: number, val: unknown): void;
}

interface Internals {
  _protocol: Protocol;
  _chanMgr: ChannelTable;
  _sock?: SshSocket;
}

/** The SSH connection's socket as ssh2 holds it. */
interface SshSocket {
  writable?: boolean;
  writableLength?: number;
  _readableState?: { ended?: boolean };
  once?(event: 'drain', listener: () => void): unknown;
}

interface OpenConfirmation {
  recipient: number;
  sender: number;
  window: number;
  packetSize: number;
}

/** The open callback ssh2 keeps in its channel table until the server answers; ssh2 reads `type` from it. */
type PendingOpen = ((err: Error | undefined, channel?: DirectChannel) => void) & {
  type: string;
  direct: { sink: ChannelSink; client: Internals };
};

/** Not a stream: ssh2 only pushes to and closes it, and nothing here has a stderr. */
const NO_STDERR = {
  readable: false,
  destroyed: true,
  _readableState: undefined,
  push: () => true,
  emit: () => false,
  once: () => undefined,
};

export class DirectChannel implements GuestChannel {
  // Fields read or written by ssh2's handlers (client.js CHANNEL_*, utils.js onCHANNEL_CLOSE); names are theirs.
  readonly type: string;
  readonly server = false;
  readonly stderr = NO_STDERR;
  readonly incoming: Side;
  readonly outgoing: Side;
  readable = true;
  readonly destroyed = false;
  readonly _readableState = undefined;
  readonly _writableState = undefined;
  _callbacks: ((failed: boolean) => void)[] = [];
  readonly _exit = { code: undefined };
  _waitChanDrain = false;
  _waitWindow = false;
  _chunk: Buffer | undefined = undefined;
  _chunkcb: (() => void) | undefined = undefined;
  /** ssh2's window top-up after data reaches `_client._protocol`. */
  readonly _client: Internals;

  private readonly protocol: Protocol;
  private readonly sock: SshSocket | undefined;
  private endPending = false;

  constructor(
    type: string,
    confirmation: OpenConfirmation,
    private readonly sink: ChannelSink,
    client: Internals,
  ) {
    this.type = type;
    this._client = client;
    this.protocol = client._protocol;
    this.sock = client._sock;
    this.incoming = { id: confirmation.recipient, window: MAX_WINDOW, packetSize: PACKET_SIZE, state: 'open' };
    this.outgoing = {
      id: confirmation.sender,
      window: confirmation.window,
      packetSize: confirmation.packetSize,
      state: 'open',
    };
  }

  write(chunk: Buffer): boolean {
    if (this.outgoing.state !== 'open' || this.endPending) return true;
    if (this._chunk) {
      this._chunk = Buffer.concat([this._chunk, chunk]);
      return false;
    }
    return this.send(chunk);
  }

  end(): void {
    if (this._chunk) this.endPending = true;
    else this.sendEOF();
  }

  close(): void {
    const out = this.outgoing;
    if (out.state === 'open' || out.state === 'eof') {
      out.state = 'closing';
      // ssh2 calls this from its CLOSE handler, after marking the incoming side closed: ours is then an answer.
      if (this.incoming.state === 'closed') answerClose(this.protocol, this.sock, out.id);
      else this.protocol.channelClose(out.id);
    }
    // Nothing may follow our CLOSE: OpenSSH drops the whole connection on data for a channel it has freed.
    this._chunk = undefined;
    this._chunkcb = undefined;
    this._waitWindow = false;
    this.endPending = false;
  }

  flush(): void {
    flushWrites(this.sock);
  }

  resume(): void {
    if (!this._waitChanDrain) return;
    this._waitChanDrain = false;
    this.topUpWindow();
  }

  // ── called by ssh2 ──────────────────────────────────────────────────────────────────────────────────────────────

  /** Guest data, or null for its EOF or CLOSE (ssh2 marks a CLOSE by setting incoming.state first). */
  push(chunk: Buffer | null): boolean {
    // After our CLOSE the guest's data in flight is dropped, and false keeps ssh2 from granting it more window.
    if (chunk !== null) return this.outgoing.state !== 'closing' && this.sink.data(chunk);
    this.readable = false;
    // A CLOSE without EOF: whether the guest or a lost connection ended it is known only at 'close'.
    if (this.incoming.state !== 'closed') this.sink.end();
    return false;
  }

  /** ssh2 emits only 'close' on a forwarding channel, once its CLOSE handling is done. */
  emit(event: string): boolean {
    if (event !== 'close') return false;
    // The guest's CLOSE is answered with ours (outgoing closed); a lost connection sends nothing, so ours stays open.
    this.sink.close(this.outgoing.state !== 'closed');
    return true;
  }

  once(): this {
    return this;
  }

  /** ssh2's WINDOW_ADJUST handler hands back what was held for window here, with the callback set alongside it. */
  _write(chunk: Buffer, _encoding: unknown, cb: () => void): void {
    this._chunk = undefined;
    this._chunkcb = undefined;
    if (this.outgoing.state !== 'open') return;
    if (this.send(chunk)) cb();
  }

  /**
   * Sends what the window allows in packets; holds the rest for the next WINDOW_ADJUST. False also when all of it
   * went out but the SSH socket's queue is over OUTPUT_LIMIT.
   */
  private send(chunk: Buffer): boolean {
    const out = this.outgoing;
    let p = 0;
    while (p < chunk.length && out.window > 0) {
      const n = Math.min(chunk.length - p, out.window, out.packetSize);
      this.protocol.channelData(out.id, p === 0 && n === chunk.length ? chunk : chunk.subarray(p, p + n));
      p += n;
      out.window -= n;
    }
    if (p === chunk.length) return !waitForOutput(this.sock, this);
    this._chunk = p === 0 ? chunk : chunk.subarray(p);
    this._chunkcb = () => this.drained();
    this._waitWindow = true;
    return false;
  }

  /** The window came back (ssh2's `_chunkcb`) or the SSH socket drained (waitForOutput). */
  drained(): void {
    if (this.outgoing.state !== 'open' && this.outgoing.state !== 'eof') return;
    if (this.endPending) {
      this.endPending = false;
      this.sendEOF();
    }
    this.sink.drain();
  }

  private sendEOF(): void {
    const out = this.outgoing;
    if (out.state !== 'open') return;
    out.state = 'eof';
    this.protocol.channelEOF(out.id);
  }

  private topUpWindow(): void {
    const amount = MAX_WINDOW - this.incoming.window;
    const { state } = this.outgoing;
    if ((state !== 'open' && state !== 'eof') || this.incoming.window > WINDOW_THRESHOLD || amount <= 0) return;
    this.incoming.window += amount;
    this.protocol.channelWindowAdjust(this.outgoing.id, amount);
  }
}

/** Channels told to wait for each SSH socket's queue to drain; all of them go on at its 'drain'. */
const outputWaiters = new WeakMap<SshSocket, Set<DirectChannel>>();

/** True (and `channel.drained()` follows the socket's next 'drain') when the socket's queue is over OUTPUT_LIMIT. */
function waitForOutput(sock: SshSocket | undefined, channel: DirectChannel): boolean {
  if (!sock?.once || (sock.writableLength ?? 0) <= OUTPUT_LIMIT) return false;
  let waiting = outputWaiters.get(sock);
  if (!waiting) {
    const set = new Set<DirectChannel>();
    outputWaiters.set(sock, set);
    // Node emits 'drain' once the queue is empty after a write that found it over the high-water mark, which the
    // write that took it past OUTPUT_LIMIT did. A socket that dies instead closes its channels through ssh2.
    sock.once('drain', () => {
      outputWaiters.delete(sock);
      for (const c of set) c.drained();
    });
    waiting = set;
  }
  waiting.add(channel);
  return true;
}

/** Protocol objects whose confirmation handler is wrapped (ssh2 builds a new one per connect). */
const intercepted = new WeakSet<Protocol>();

/**
 * Opens a forwarding channel on a ready client; `cb` gets the channel once the server confirms it, or the server's
 * refusal. Throws when the client cannot send (ssh2 throws the same way) or when ssh2's internals are not the ones
 * this module was written against.
 */
export function openDirectChannel(
  client: Client,
  target: DirectTarget,
  sink: ChannelSink,
  cb: (err: Error | undefined, channel?: DirectChannel) => void,
): void {
  const owner = internals(client);
  const { _protocol: protocol, _chanMgr: table } = owner;
  // ssh2's own opens throw alike; without this, an open between the socket's end and its close would go unanswered.
  if (!writable(owner._sock)) throw new Error('Not connected');
  if (!intercepted.has(protocol)) {
    interceptConfirmations(protocol, table);
    intercepted.add(protocol);
  }
  const type = target.kind === 'tcp' ? 'direct-tcpip' : 'direct-streamlocal@openssh.com';
  const pending = ((err: Error | undefined, channel?: DirectChannel) => cb(err, channel)) as PendingOpen;
  pending.type = type;
  pending.direct = { sink, client: owner };
  const id = table.add(pending);
  if (id === -1) {
    cb(new Error('No free channels available'));
    return;
  }
  sendCloseAnswersOf(owner._sock);
  if (target.kind === 'tcp') protocol.directTcpip(id, MAX_WINDOW, PACKET_SIZE, target);
  else protocol.openssh_directStreamLocal(id, MAX_WINDOW, PACKET_SIZE, { socketPath: target.socketPath });
  flushWrites(owner._sock);
}

/**
 * Our CLOSE in answer to the guest's goes out two event-loop turns later. Nothing waits for it, whereas the client
 * waits for the FIN that the guest's EOF and CLOSE lead to, and libuv runs shutdown(2) only after the callbacks of
 * the current poll phase: a CLOSE written at once (a write that wakes the receiving end, often preempting this
 * process) went first and delayed the FIN. Deferring it took the echo latency p50 from 1.3x to about 1.15x `ssh -L`,
 * which shuts its socket down before writing the CLOSE. The CLOSE names the guest's channel number, which sshd keeps
 * allocated until our CLOSE arrives (RFC 4254 5.3); ssh2 frees our own number at once, and nothing more is sent or
 * received under it.
 */
interface CloseAnswer {
  protocol: Protocol;
  sock: SshSocket | undefined;
  id: number;
}

/**
 * Answers not sent yet. Those queued in one turn go out together in the check phase of the turn after, unless an
 * open on the same connection takes them along first (see `sendCloseAnswersOf`).
 */
const unsentAnswers = new Set<CloseAnswer>();
let thisTurn: CloseAnswer[] = [];

function answerClose(protocol: Protocol, sock: SshSocket | undefined, id: number): void {
  const answer = { protocol, sock, id };
  unsentAnswers.add(answer);
  if (thisTurn.push(answer) > 1) return;
  setImmediate(() => {
    const batch = thisTurn;
    thisTurn = [];
    setImmediate(() => {
      for (const a of batch) if (unsentAnswers.delete(a)) sendCloseAnswer(a);
    });
  });
}

/**
 * Sends the connection's pending answers now, ahead of a packet about to be written: they share its write. OpenSSH
 * does the same (its CLOSE goes out with the next connection's open), and a separate write cost a syscall and a
 * wake-up of the guest's sshd per connection.
 */
function sendCloseAnswersOf(sock: SshSocket | undefined): void {
  if (unsentAnswers.size === 0) return;
  for (const a of unsentAnswers) {
    if (a.sock !== sock) continue;
    unsentAnswers.delete(a);
    sendCloseAnswer(a);
  }
}

function sendCloseAnswer({ protocol, sock, id }: CloseAnswer): void {
  // A connection lost meanwhile has forgotten its channels; its successor never knew them.
  if (!writable(sock)) return;
  try {
    protocol.channelClose(id);
  } catch {
    // The socket died between the check and the write: the connection's end closes every channel anyway.
  }
}

/** ssh2's test (utils.js isWritable): a socket can be writable after its read side ended (nodejs/node#36029). */
function writable(sock: Internals['_sock']): boolean {
  return !!sock?.writable && sock._readableState?.ended === false;
}

function internals(client: Client): Internals {
  const c = client as unknown as Partial<Internals>;
  const p = c._protocol;
  const t = c._chanMgr;
  if (
    !p ||
    !t ||
    typeof p.directTcpip !== 'function' ||
    typeof p.channelData !== 'function' ||
    typeof p._handlers?.CHANNEL_OPEN_CONFIRMATION !== 'function' ||
    typeof t.add !== 'function'
  ) {
    throw new Error('ssh2 internals differ from the version tether pins (see host/package.json); cannot open channels');
  }
  return c as Internals;
}

/**
 * ssh2 builds its own Channel when an open is confirmed; for opens made here the handler builds a DirectChannel
 * instead and puts it in the table where ssh2's other handlers find it.
 */
function interceptConfirmations(protocol: Protocol, table: ChannelTable): void {
  const handlers = protocol._handlers as Record<string, (p: unknown, info: OpenConfirmation) => void>;
  const original = handlers.CHANNEL_OPEN_CONFIRMATION;
  handlers.CHANNEL_OPEN_CONFIRMATION = (p, info) => {
    const pending = table.get(info.recipient) as PendingOpen | undefined;
    if (typeof pending !== 'function' || !pending.direct) return original(p, info);
    const { sink, client } = pending.direct;
    const channel = new DirectChannel(pending.type, info, sink, client);
    table.update(info.recipient, channel);
    sink.opened?.(channel);
    pending(undefined, channel);
  };
}
