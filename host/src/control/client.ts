// Client of the control API (used by the CLI, and by an agent asking the others which of them holds a host port):
// JSON requests over the instance's unix socket and the WebSocket event stream. Turns "nobody listens" into
// AgentNotRunningError and `{error}` replies into ControlError.
import { constants as fsConstants } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import type { LoadedConfig } from '../config/load.js';
import type { AgentEvent, ForwardSpec, ForwardView, MountView, StatusView } from '../model.js';
import { type Denied, deniedAt, runAsOwner } from '../owner.js';

export class AgentNotRunningError extends Error {
  constructor(
    readonly socketPath: string,
    cause: string,
  ) {
    super(`the agent is not running (no answer on ${socketPath}: ${cause})`);
    this.name = 'AgentNotRunningError';
  }
}

/** The agent's socket takes the connection, but no reply comes in time (its process is stopped or stuck). */
export class AgentNotAnsweringError extends Error {
  constructor(
    readonly socketPath: string,
    cause: string,
  ) {
    super(`the agent does not answer on ${socketPath} (${cause}): it is stopped or stuck`);
    this.name = 'AgentNotAnsweringError';
  }
}

/** The agent's socket is another user's (the agent runs as root, this command does not). */
export class AgentAccessError extends Error {
  constructor(
    readonly socketPath: string,
    readonly denied: Denied,
  ) {
    super(`the agent on ${socketPath} cannot be asked: ${runAsOwner(denied)}`);
    this.name = 'AgentAccessError';
  }
}

export class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

interface EventSubscription {
  /** Resolves once the stream is open (events after this point are delivered). */
  readonly opened: Promise<void>;
  close(): void;
}

export class ControlClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  status(): Promise<StatusView> {
    return this.call('GET', '/v1/status');
  }

  /** The config the agent runs with (loaded when it started: tether.yaml may have changed since). */
  config(): Promise<LoadedConfig> {
    return this.call('GET', '/v1/config');
  }

  forwards(): Promise<ForwardView[]> {
    return this.call('GET', '/v1/forwards');
  }

  mounts(): Promise<MountView[]> {
    return this.call('GET', '/v1/mounts');
  }

  addForward(spec: ForwardSpec): Promise<ForwardView> {
    return this.call('POST', '/v1/forwards', spec);
  }

  async removeForward(id: string): Promise<void> {
    await this.call('DELETE', `/v1/forwards/${encodeURIComponent(id)}`);
  }

  /** Asks a degraded agent to try its failed mounts again now; false when nothing was waiting. */
  async retryMounts(): Promise<boolean> {
    return (await this.call<{ retrying: boolean }>('POST', '/v1/mounts/retry')).retrying;
  }

  /** `reason` goes into the agent's stop line (and so `status` of the stopped instance). */
  async shutdown(reason?: string): Promise<void> {
    await this.call('POST', '/v1/shutdown', reason === undefined ? undefined : { reason });
  }

  /**
   * Streams AgentEvents to `onEvent`; `onClose` gets a reason when the stream ends (agent gone, error), and `stopped`
   * when the agent said it stops.
   */
  events(
    onEvent: (e: AgentEvent) => void,
    onClose: (reason: string, stopped: boolean) => void = () => {},
  ): EventSubscription {
    let closed = false;
    let ws: import('ws').WebSocket | null = null;
    const finish = (reason: string, stopped = false) => {
      if (closed) return;
      closed = true;
      onClose(reason, stopped);
    };
    // ws is loaded on first use: most commands never stream events, and the CLI should start fast.
    const opened = import('ws').then(
      ({ WebSocket }) =>
        new Promise<void>((resolve, reject) => {
          if (closed) return reject(new Error('event stream closed before it opened'));
          const socket = new WebSocket(`ws+unix://${this.socketPath}:/v1/events`);
          ws = socket;
          socket.once('open', () => resolve());
          socket.once('error', (err: NodeJS.ErrnoException) => reject(this.connectError(err)));
          socket.on('message', (data) => {
            try {
              onEvent(JSON.parse(data.toString()) as AgentEvent);
            } catch {
              // A malformed event is skipped; the next status poll corrects the picture.
            }
          });
          socket.on('close', (code, reason) =>
            finish(reason.toString() || `event stream closed (code ${code})`, code === 1001),
          );
          socket.on('error', (err) => finish(err.message));
        }),
    );
    opened.catch(() => {});
    return {
      opened,
      close: () => {
        closed = true;
        ws?.terminate();
      },
    };
  }

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      // A deadline for the whole exchange: http's `timeout` option does not reach a socket made by createConnection,
      // and an agent whose event loop is stuck (a hung host file system) accepts the connection and never answers.
      const timer = setTimeout(
        () => req.destroy(new AgentNotAnsweringError(this.socketPath, `no reply within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      const settle =
        <A extends unknown[]>(fn: (...args: A) => void) =>
        (...args: A) => {
          clearTimeout(timer);
          fn(...args);
        };
      resolve = settle(resolve);
      reject = settle(reject);
      const req = request(
        {
          // Its own connection, not through http's global agent: the agent's server-name check compiles Node's IPv6
          // address pattern, a tenth of a short command's run time.
          createConnection: () => connect(this.socketPath),
          path,
          method,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : undefined,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text.length > 0 ? JSON.parse(text) : null;
            } catch {
              reject(
                new ControlError(res.statusCode ?? 0, `${method} ${path}: reply is not JSON: ${text.slice(0, 200)}`),
              );
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 400) {
              const msg = (parsed as { error?: unknown } | null)?.error;
              reject(new ControlError(status, typeof msg === 'string' ? msg : `${method} ${path}: HTTP ${status}`));
            } else resolve(parsed as T);
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.connectError(err)));
      req.end(payload);
    });
  }

  private connectError(err: NodeJS.ErrnoException): Error {
    if (err instanceof AgentNotAnsweringError) return err;
    if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
      return new AgentNotRunningError(this.socketPath, err.code === 'ENOENT' ? 'no socket' : 'connection refused');
    if (err.code === 'EACCES') {
      const denied = deniedAt(this.socketPath, fsConstants.W_OK);
      if (denied) return new AgentAccessError(this.socketPath, denied);
    }
    return new Error(`control API on ${this.socketPath}: ${err.message}`);
  }
}
