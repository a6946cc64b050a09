// The host client's end of a forwarded connection, as the bridge drives it: a net.Socket (unix sockets, and any TCP
// connection where the handle is not available), or the accepted TCP connection's libuv handle itself. A net.Socket
// builds a Duplex with both stream states and moves every read, end and close through nextTick callbacks; per echo
// connection that was about a third of the agent's user CPU, measured against driving the handle. The handle path
// uses what net.Socket uses inside (the handle's onread, writeBuffer, shutdown, close and reset, and the write and
// shutdown request classes of Node's stream_wrap binding), unchanged since Node 12; where they are missing,
// `handleEnds` is false and connections get a net.Socket.
//
// Owns one client connection's reads, writes, half-close and close; knows nothing of SSH.
import type { Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';

/** Where a client end delivers what happens on it. */
export interface ClientSink {
  /** Bytes from the client (only while reading: see `resume`). */
  data(chunk: Buffer): void;
  /** The client's EOF. */
  end(): void;
  /** `write` returned false and the client has taken what was queued. */
  drain(): void;
  /** A read or write failed; `closed` follows. */
  error(err: Error): void;
  /** The connection is closed (after `destroy`, `reset`, an error, or both directions ending). */
  closed(): void;
}

export interface ClientEnd {
  readonly destroyed: boolean;
  /** Bytes written but not yet taken by the kernel. */
  readonly writableLength: number;
  /** Starts delivering to `sink`; nothing is read until `resume`. */
  start(sink: ClientSink): void;
  /** False when the caller should wait for the sink's `drain`. */
  write(chunk: Buffer): boolean;
  /** Our FIN once what is queued is written; `cb` once it went out. */
  end(cb?: () => void): void;
  /** Closes the connection now. */
  destroy(): void;
  /** Closes it with a TCP reset where possible. */
  reset(): void;
  pause(): void;
  resume(): void;
}

// ── a net.Socket ──────────────────────────────────────────────────────────────────────────────────────────────────

export function socketEnd(socket: Socket): ClientEnd {
  return {
    get destroyed() {
      return socket.destroyed;
    },
    get writableLength() {
      return socket.writableLength;
    },
    start(sink) {
      socket.setNoDelay(true);
      socket.on('error', (err) => sink.error(err));
      socket.on('close', () => sink.closed());
      socket.on('data', (chunk: Buffer) => sink.data(chunk));
      socket.on('drain', () => sink.drain());
      socket.on('end', () => sink.end());
    },
    write: (chunk) => socket.write(chunk),
    end: (cb) => {
      socket.end(cb);
    },
    destroy: () => {
      socket.destroy();
    },
    reset: () => {
      if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed && socket.remoteAddress) {
        socket.resetAndDestroy();
      } else {
        socket.destroy();
      }
    },
    pause: () => {
      socket.pause();
    },
    resume: () => {
      socket.resume();
    },
  };
}

// ── a libuv TCP handle ────────────────────────────────────────────────────────────────────────────────────────────

/** An accepted TCP connection's handle, as Node's TCPWrap offers it. */
export interface TcpHandle {
  /** Node checks that it is a function: never null. */
  onread: (this: TcpHandle, buf: ArrayBuffer | undefined) => void;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: object, chunk: Buffer): number;
  shutdown(req: object): number;
  close(cb?: () => void): void;
  reset?(cb?: () => void): number;
  setNoDelay?(enable: boolean): number;
  getpeername?(out: object): number;
  readonly writeQueueSize?: number;
}

interface Request {
  handle: TcpHandle;
  oncomplete: (status: number) => void;
  async?: boolean;
}

interface StreamWrap {
  WriteWrap: new () => Request;
  ShutdownWrap: new () => Request;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

/** libuv's end of stream, the same number on every platform (UV__EOF). */
const UV_EOF = -4095;
/** Queued bytes above which `write` asks the caller to wait, as a net.Socket's default high-water mark. */
const HIGH_WATER_MARK = 16 * 1024;

function loadStreamWrap(): StreamWrap | null {
  try {
    const binding = (process as unknown as { binding(name: string): Partial<StreamWrap> }).binding('stream_wrap');
    const { WriteWrap, ShutdownWrap, streamBaseState } = binding;
    if (typeof WriteWrap !== 'function' || typeof ShutdownWrap !== 'function' || !streamBaseState) return null;
    if (typeof binding.kReadBytesOrError !== 'number' || typeof binding.kArrayBufferOffset !== 'number') return null;
    if (typeof binding.kLastWriteWasAsync !== 'number') return null;
    return binding as StreamWrap;
  } catch {
    return null;
  }
}

const wrap = loadStreamWrap();

/** Whether accepted TCP connections can be driven through their handles here. */
export const handleEnds = wrap !== null;

/** Whether `handle` has every method a handle end calls. */
export function isTcpHandle(handle: unknown): handle is TcpHandle {
  const h = handle as Partial<TcpHandle> | null;
  return (
    !!h &&
    typeof h.readStart === 'function' &&
    typeof h.readStop === 'function' &&
    typeof h.writeBuffer === 'function' &&
    typeof h.shutdown === 'function' &&
    typeof h.close === 'function'
  );
}

function errnoError(code: number, syscall: string): Error {
  let name = String(code);
  try {
    name = getSystemErrorName(code);
  } catch {
    // Not an error number util knows: the number alone.
  }
  const err = new Error(`${syscall} ${name}`) as NodeJS.ErrnoException;
  err.code = name;
  err.errno = code;
  err.syscall = syscall;
  return err;
}

/** What a closed handle's reads go to (nothing arrives once it is closed). */
function ignoreRead(): void {}

/** A client end on an accepted TCP handle (only when `handleEnds`). */
export function handleEnd(handle: TcpHandle): ClientEnd {
  return new HandleEnd(handle, wrap as StreamWrap);
}

class HandleEnd implements ClientEnd {
  destroyed = false;
  private sink: ClientSink | null = null;
  private reading = false;
  private eof = false;
  /** Our FIN is queued (shutdown); `finished` once it went out. */
  private ending = false;
  private finished = false;
  private waitingDrain = false;
  private endCb: (() => void) | undefined = undefined;
  private readonly onWriteDone: (status: number) => void;

  constructor(
    private readonly handle: TcpHandle,
    private readonly sw: StreamWrap,
  ) {
    this.onWriteDone = (status) => this.writeDone(status);
  }

  get writableLength(): number {
    return this.destroyed ? 0 : (this.handle.writeQueueSize ?? 0);
  }

  start(sink: ClientSink): void {
    this.sink = sink;
    const { sw } = this;
    const state = sw.streamBaseState;
    this.handle.setNoDelay?.(true);
    this.handle.onread = (buf) => {
      const n = state[sw.kReadBytesOrError];
      if (n > 0) {
        if (!this.destroyed && buf) this.sink?.data(Buffer.from(buf, state[sw.kArrayBufferOffset], n));
        return;
      }
      if (n === 0) return;
      this.reading = false;
      if (n === UV_EOF) {
        this.eof = true;
        this.sink?.end();
        this.maybeClose();
      } else {
        this.fail(errnoError(n, 'read'));
      }
    };
  }

  write(chunk: Buffer): boolean {
    if (this.destroyed || this.ending) return true;
    const req = new this.sw.WriteWrap();
    req.handle = this.handle;
    req.oncomplete = this.onWriteDone;
    req.async = false;
    const err = this.handle.writeBuffer(req, chunk);
    if (err !== 0) {
      this.failSoon(errnoError(err, 'write'));
      return false;
    }
    if (this.sw.streamBaseState[this.sw.kLastWriteWasAsync]) {
      // libuv writes the rest when the socket takes it; the chunk stays referenced by the request meanwhile.
      (req as Request & { buffer?: Buffer }).buffer = chunk;
      if (this.writableLength > HIGH_WATER_MARK) {
        this.waitingDrain = true;
        return false;
      }
    }
    return true;
  }

  end(cb?: () => void): void {
    if (this.destroyed) return;
    if (this.ending) {
      // Already on its way: `cb` follows the FIN as well.
      if (!cb) return;
      if (this.finished) process.nextTick(cb);
      else {
        const before = this.endCb;
        this.endCb = before
          ? () => {
              before();
              cb();
            }
          : cb;
      }
      return;
    }
    this.ending = true;
    this.endCb = cb;
    const req = new this.sw.ShutdownWrap();
    req.handle = this.handle;
    req.oncomplete = (status) => {
      if (this.destroyed) return;
      if (status < 0 && status !== UV_EOF) {
        this.fail(errnoError(status, 'shutdown'));
        return;
      }
      this.finished = true;
      const done = this.endCb;
      this.endCb = undefined;
      done?.();
      this.maybeClose();
    };
    const err = this.handle.shutdown(req);
    if (err !== 0) this.failSoon(errnoError(err, 'shutdown'));
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.handle.onread = ignoreRead;
    this.handle.close(() => this.sink?.closed());
  }

  reset(): void {
    if (this.destroyed) return;
    if (typeof this.handle.reset !== 'function') {
      this.destroy();
      return;
    }
    this.destroyed = true;
    this.handle.onread = ignoreRead;
    const err = this.handle.reset(() => this.sink?.closed());
    if (err !== 0) this.handle.close(() => this.sink?.closed());
  }

  pause(): void {
    if (!this.reading || this.destroyed) return;
    this.reading = false;
    this.handle.readStop();
  }

  resume(): void {
    if (this.reading || this.eof || this.destroyed) return;
    this.reading = true;
    const err = this.handle.readStart();
    if (err !== 0) this.failSoon(errnoError(err, 'read'));
  }

  private writeDone(status: number): void {
    if (this.destroyed) return;
    if (status < 0) {
      this.fail(errnoError(status, 'write'));
      return;
    }
    if (this.waitingDrain && this.writableLength === 0) {
      this.waitingDrain = false;
      this.sink?.drain();
    }
  }

  /** Both directions are done: the connection closes, as a net.Socket with allowHalfOpen does. */
  private maybeClose(): void {
    if (this.eof && this.finished) this.destroy();
  }

  private fail(err: Error): void {
    if (this.destroyed) return;
    this.sink?.error(err);
    this.destroy();
  }

  /** Errors found inside a call from the bridge reach it after that call returns, as a net.Socket's do. */
  private failSoon(err: Error): void {
    process.nextTick(() => this.fail(err));
  }
}
