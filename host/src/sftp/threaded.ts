// The builtin SFTP server on a worker thread, one per session. Its handlers call the filesystem synchronously (see
// server.ts for why), so a host filesystem that hangs (a stale NFS or SMB share, a FUSE mount whose daemon stopped,
// a cloud-drive file not downloaded yet) blocks the thread it runs on until the call returns. On its own thread that
// stalls this one mount, as it would stall OpenSSH's sftp-server process; forwards, the agent link and the control
// API go on. Owns the worker, the byte stream between the SSH channel and it, and the session's end.
import { EventEmitter } from 'node:events';
import { realpathSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { PortStream } from './port-stream.js';
import type { SftpLogger, SftpServerOptions } from './server.js';

/** What the worker needs to serve: the options minus the logger, which stays here. */
export type SftpThreadOptions = Omit<SftpServerOptions, 'log'>;

type LogLevel = keyof SftpLogger;

/** Worker → main, besides stream data. */
export type FromSftpThread =
  | { t: 'log'; level: LogLevel; obj: object; msg: string }
  /** The session ended; everything it wrote has been posted before this. */
  | { t: 'closed'; reason: string };

/** Main → worker, besides stream data. */
export type ToSftpThread = { t: 'close'; reason: string };

/** How long a closing session may take before its thread is abandoned (it is stuck in a filesystem call). */
const CLOSE_TIMEOUT_MS = 5_000;

/**
 * Compiled beside this file in host/dist; from the TypeScript sources (tests) the path leads to the same built file,
 * since a worker cannot load .ts.
 */
const WORKER_URL = new URL('../../dist/sftp/worker.js', import.meta.url);

/** One session on its own thread. Emits 'close' with `{ reason }` once. */
export interface ThreadedSftpSession extends EventEmitter {
  close(reason?: string): void;
}

/**
 * Serves SFTP v3 on `stream` from a worker thread until the stream ends or close() is called. Throws, like
 * serveSftp, when `opts.root` does not exist, before starting a thread.
 */
export function serveSftpThreaded(stream: Duplex, opts: SftpServerOptions): ThreadedSftpSession {
  realpathSync.native(opts.root);
  return new ThreadedSession(stream, opts);
}

class ThreadedSession extends EventEmitter implements ThreadedSftpSession {
  private readonly worker: Worker;
  private readonly bridge: PortStream;
  private readonly log: SftpLogger | undefined;
  private closing = false;
  private finished = false;
  private closeTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly channel: Duplex,
    opts: SftpServerOptions,
  ) {
    super();
    const { log, ...threadOpts } = opts;
    this.log = log;
    // No inherited execArgv: the thread needs no Node options, and a test runner's (`--conditions source`) would make
    // it resolve workspace packages to their TypeScript sources.
    this.worker = new Worker(WORKER_URL, { workerData: threadOpts satisfies SftpThreadOptions, execArgv: [] });
    this.bridge = new PortStream(this.worker, (m) => this.onMessage(m as FromSftpThread));
    channel.pipe(this.bridge);
    this.bridge.pipe(channel);
    channel.once('close', () => {
      this.bridge.unpipe(channel);
      this.close('stream closed');
    });
    this.bridge.on('error', () => undefined); // destroyed with the worker; 'exit' or 'closed' says why
    this.worker.once('error', (err) => this.finish(`the SFTP thread failed: ${err.message}`));
    this.worker.once('exit', (code) => this.finish(`the SFTP thread exited (code ${code})`));
  }

  close(reason = 'closed by server'): void {
    if (this.closing || this.finished) return;
    this.closing = true;
    this.bridge.post({ t: 'close', reason } satisfies ToSftpThread);
    this.closeTimer = setTimeout(() => {
      this.log?.warn({ reason }, 'sftp: the session thread did not stop; a host filesystem call may hang');
      this.finish(`${reason} (the SFTP thread did not stop within ${CLOSE_TIMEOUT_MS / 1000} s)`);
    }, CLOSE_TIMEOUT_MS);
    this.closeTimer.unref();
  }

  private onMessage(m: FromSftpThread): void {
    if (m.t === 'log') this.log?.[m.level](m.obj, m.msg);
    else if (m.t === 'closed') this.finish(m.reason);
  }

  private finish(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.bridge.detach();
    // A thread stuck in a filesystem call ends when the call returns.
    void this.worker.terminate();
    this.bridge.unpipe(this.channel);
    if (!this.channel.destroyed) this.channel.end();
    this.emit('close', { reason });
  }
}
