// The RPC peer both agents speak through: hello/version check, requests with ids and timeouts, one-way events,
// ping, and close(reason) that fails everything pending. Owns dispatch and validation of incoming messages;
// the agents own what the handlers do.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { LinkClosedError, ProtocolError, ProtocolVersionError, RemoteError, RequestTimeoutError } from './errors.js';
import { DEFAULT_MAX_FRAME, encodeFrame, FrameDecoder, INCOMPLETE } from './frame.js';
import {
  Envelope,
  type EventData,
  type EventName,
  events,
  FRAME_LIMITS,
  type Hello,
  isEventName,
  isMethodName,
  type MethodName,
  methods,
  type Params,
  PROTOCOL_VERSION,
  type ResponseError,
  type Result,
} from './messages.js';
import { remoteText } from './remote-text.js';
import { validate } from './validate.js';

/** The longest error message of the other side's that is kept (its schema allows 4 KiB). */
const REMOTE_MESSAGE_CHARS = 512;

export interface PeerOptions {
  /** Identifies this side in `hello`, e.g. `tether/0.1.0`. */
  agent: string;
  caps?: string[];
  /** Largest frame sent or accepted once hello is accepted (before it, only a hello-sized frame is). */
  maxFrame?: number;
  /**
   * Bytes allowed to wait unsent before the link is closed: a remote that keeps asking (ping floods) but never reads
   * the answers must not grow our memory without bound. Default 64 MiB.
   */
  maxBuffered?: number;
  /** Default per-request timeout. */
  timeoutMs?: number;
}

type Handler<M extends MethodName> = (params: Params<M>) => Result<M> | Promise<Result<M>>;
type EventHandler<E extends EventName> = (data: EventData<E>) => void;

interface Pending {
  method: string;
  resolve: (r: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** The close reason when the other side ended the stream (it closed the connection: exited, restarted, stopped). */
export const REMOTE_ENDED = 'remote ended the stream';

/**
 * Events: `ready` (remote Hello), `close` (reason: string, error?: Error), `unhandled` (event without handler),
 * `unknownEvent` (name: an event missing from this side's table, ignored; once per name), `handlerError` (name,
 * error thrown by a local event handler).
 * A peer is single-use: after close, make a new one on a new stream.
 */
export class Peer extends EventEmitter {
  remote: Hello | null = null;
  closeReason: string | null = null;
  /** Resolves with the remote hello; rejects if the link closes first or the versions differ. */
  readonly ready: Promise<Hello>;

  private readonly decoder: FrameDecoder;
  private readonly maxFrame: number;
  /** This side's name in hello, e.g. `tether/0.1.0`. */
  private readonly agent: string;
  private readonly timeoutMs: number;
  private readonly maxBuffered: number;
  private readonly handlers = new Map<string, (p: unknown) => unknown>();
  private readonly eventHandlers = new Map<string, (d: unknown) => void>();
  private readonly pending = new Map<number, Pending>();
  private readonly unknownEvents = new Set<string>();
  private nextId = 1;

  constructor(
    private readonly stream: Duplex,
    opts: PeerOptions,
  ) {
    super();
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.agent = opts.agent;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxBuffered = opts.maxBuffered ?? 64 * 1024 * 1024;
    const { beforeHello } = FRAME_LIMITS;
    this.decoder = new FrameDecoder({ ...beforeHello, maxBytes: Math.min(beforeHello.maxBytes, this.maxFrame) });
    this.ready = new Promise<Hello>((resolve, reject) => {
      this.once('ready', resolve);
      this.once('close', (reason: string) => reject(new LinkClosedError(reason)));
    });
    this.ready.catch(() => {}); // observed through `close` by callers that never await ready
    this.handle('ping', (p) => p);

    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.close(REMOTE_ENDED));
    stream.on('close', () => this.close('stream closed'));
    stream.on('error', (err) => this.close(`stream error: ${err.message}`, err));
    this.write({ t: 'hello', v: PROTOCOL_VERSION, agent: opts.agent, caps: opts.caps ?? [] });
  }

  get closed(): boolean {
    return this.closeReason !== null;
  }

  /** True when the outgoing buffer has room; callers sending bulk data (UDP) drop or wait when false. */
  get writable(): boolean {
    return !this.closed && !this.stream.writableNeedDrain;
  }

  /** Bytes waiting unsent: a sender of bursts (UDP) drops past a bound of its own, deeper than `writable`'s. */
  get queuedBytes(): number {
    return this.stream.writableLength;
  }

  handle<M extends MethodName>(method: M, handler: Handler<M>): void {
    this.handlers.set(method, handler as (p: unknown) => unknown);
  }

  onEvent<E extends EventName>(name: E, handler: EventHandler<E>): void {
    this.eventHandlers.set(name, handler as (d: unknown) => void);
  }

  request<M extends MethodName>(method: M, params: Params<M>, opts?: { timeoutMs?: number }): Promise<Result<M>> {
    if (this.closed) return Promise.reject(new LinkClosedError(this.closeReason!));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1;
    const timeoutMs = opts?.timeoutMs ?? this.timeoutMs;
    return new Promise<Result<M>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeoutError(method, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (r: unknown) => void, reject, timer });
      this.write({ t: 'req', id, m: method, p: params });
    });
  }

  /** Sends a one-way event; returns false when the link is closed or its buffer is full (the event is still queued). */
  notify<E extends EventName>(name: E, data: EventData<E>): boolean {
    if (this.closed) return false;
    return this.write({ t: 'evt', e: name, d: data });
  }

  /** Round-trip time in ms, or a rejection when the remote does not answer in time. */
  async ping(timeoutMs = 5_000): Promise<number> {
    const start = performance.now();
    await this.request('ping', { t: Date.now() }, { timeoutMs });
    return performance.now() - start;
  }

  close(reason: string, error?: Error): void {
    if (this.closed) return;
    this.closeReason = reason;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new LinkClosedError(reason));
    }
    this.stream.destroy();
    this.emit('close', reason, error);
  }

  private write(message: unknown): boolean {
    if (this.stream.writableLength > this.maxBuffered) {
      this.close(`remote is not reading: ${this.stream.writableLength} bytes wait unsent (limit ${this.maxBuffered})`);
      return false;
    }
    try {
      return this.stream.write(encodeFrame(message, this.maxFrame));
    } catch (err) {
      this.close(`cannot send: ${(err as Error).message}`, err as Error);
      return false;
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.decoder.add(chunk);
    while (!this.closed) {
      let m: unknown;
      try {
        m = this.decoder.next();
      } catch (err) {
        const when = this.remote ? '' : ' (before hello)';
        this.close(`${(err as Error).message}${when}`, err as Error);
        return;
      }
      if (m === INCOMPLETE) return;
      try {
        this.dispatch(m);
      } catch (err) {
        this.close((err as Error).message, err as Error);
      }
    }
  }

  private dispatch(raw: unknown): void {
    const msg = validate(Envelope, raw, 'message');
    if (msg.t === 'hello') {
      this.onHello(msg);
      return;
    }
    if (!this.remote) throw new ProtocolError(`expected hello first, got ${msg.t}`);
    if (msg.t === 'req') this.onRequest(msg.id, msg.m, msg.p);
    else if (msg.t === 'res') this.onResponse(msg.id, msg.ok, msg.r, msg.e);
    else this.onEventMessage(msg.e, msg.d);
  }

  private onHello(hello: Hello): void {
    if (this.remote) throw new ProtocolError('duplicate hello');
    if (hello.v !== PROTOCOL_VERSION) {
      throw new ProtocolVersionError(
        `protocol version mismatch: this side (${this.agent}) speaks ${PROTOCOL_VERSION}, ${remoteText(hello.agent)} speaks ${hello.v}`,
      );
    }
    this.remote = hello;
    // One frame at a time, so the very next frame of the same chunk is already held to these.
    this.decoder.limits = { ...FRAME_LIMITS.afterHello, maxBytes: this.maxFrame };
    this.emit('ready', hello);
  }

  private onRequest(id: number, method: string, rawParams: unknown): void {
    const handler = this.handlers.get(method);
    if (!handler || !isMethodName(method)) {
      this.write({ t: 'res', id, ok: false, r: null, e: { code: 'unknown_method', message: `no method ${method}` } });
      return;
    }
    let params: unknown;
    try {
      params = validate(methods[method].params, rawParams, `params of ${method}`);
    } catch (err) {
      this.write({ t: 'res', id, ok: false, r: null, e: { code: 'invalid_params', message: (err as Error).message } });
      return;
    }
    Promise.resolve()
      .then(() => handler(params))
      .then(
        (result) => this.write({ t: 'res', id, ok: true, r: result }),
        (err: Error) => this.write({ t: 'res', id, ok: false, r: null, e: { code: 'failed', message: err.message } }),
      );
  }

  private onResponse(id: number, ok: boolean, result: unknown, error: ResponseError | undefined) {
    const p = this.pending.get(id);
    if (!p) return; // late answer to a request that already timed out
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (!ok) {
      p.reject(
        new RemoteError(
          p.method,
          remoteText(error?.code ?? 'unknown'),
          remoteText(error?.message ?? 'no message', REMOTE_MESSAGE_CHARS),
        ),
      );
      return;
    }
    const method = p.method as MethodName;
    try {
      p.resolve(validate(methods[method].result, result, `result of ${method}`));
    } catch (err) {
      p.reject(err as Error);
      throw err; // a peer answering with garbage is broken or hostile: the link closes
    }
  }

  private onEventMessage(name: string, rawData: unknown): void {
    if (!isEventName(name)) {
      // A newer remote may announce events this side has never heard of: not a broken link.
      if (!this.unknownEvents.has(name)) {
        this.unknownEvents.add(name);
        this.emit('unknownEvent', remoteText(name));
      }
      return;
    }
    const data = validate(events[name], rawData, `event ${name}`);
    const handler = this.eventHandlers.get(name);
    if (!handler) {
      this.emit('unhandled', name, data);
      return;
    }
    try {
      handler(data);
    } catch (err) {
      // A bug in our own handler is not the remote's fault: report it, keep the link.
      this.emit('handlerError', name, err);
    }
  }
}
