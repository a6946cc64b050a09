// The control API of a running host agent: HTTP JSON and a WebSocket event stream on the instance's ha.sock.
// Depends only on AgentApi (model.ts); it never touches ssh/link/forward/mount. Routes:
//   GET /v1/status · GET /v1/forwards · POST /v1/forwards · DELETE /v1/forwards/:id · GET /v1/mounts
//   POST /v1/mounts/retry · POST /v1/shutdown · WS /v1/events (AgentEvent JSON messages)
// Errors are `{error: message}` with 400 (bad request), 404 (unknown route or forward), 405, 413, 409 (the forward
// exists already), 422 (the forward cannot be added, e.g. a busy host address), 500.
// The event stream's followers are events.ts's.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { DuplicateForwardError, ForwardRefusedError } from '../forward/errors.js';
import type { Logger } from '../log.js';
import type { AgentApi, ForwardView } from '../model.js';
import { claimSocketPath, restrictSocket, SocketBusyError } from '../socket-file.js';
import { EventStream } from './events.js';
import { parseForwardSpec } from './spec.js';

const MAX_BODY = 64 * 1024;

interface ControlServerOptions {
  socketPath: string;
  agent: AgentApi;
  log: Logger;
  /** Called for POST /v1/shutdown after the reply is sent; default: agent.stop(). */
  onShutdown?: (reason: string) => void;
}

export interface ControlServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const { agent, log, socketPath } = opts;
  const shutdown =
    opts.onShutdown ??
    ((reason: string) => {
      agent.stop(reason).catch((err: Error) => log.error({ err: err.message }, 'stop after shutdown request failed'));
    });

  const http = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : statusOf(err);
      const message = err instanceof Error ? err.message : String(err);
      if (status >= 500) log.error({ method: req.method, url: req.url, err: message }, 'control request failed');
      send(res, status, { error: message });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://tether');
    const route = `${req.method} ${url.pathname}`;
    log.debug({ route }, 'control request');
    if (route === 'GET /v1/status') {
      await agent.refreshStatus?.();
      return send(res, 200, agent.status());
    }
    if (route === 'GET /v1/forwards') return send(res, 200, agent.forwards());
    if (route === 'GET /v1/mounts') return send(res, 200, agent.mounts());
    // The config the agent runs with, which may differ from tether.yaml now (edited since, or broken): doctor's.
    if (route === 'GET /v1/config') return send(res, 200, agent.config);
    if (route === 'POST /v1/forwards') {
      let spec: ReturnType<typeof parseForwardSpec>;
      try {
        spec = parseForwardSpec(await readJson(req));
      } catch (err) {
        throw err instanceof HttpError ? err : new HttpError(400, (err as Error).message);
      }
      let added: ForwardView;
      try {
        added = await agent.addForward(spec);
      } catch (err) {
        log.info({ spec, err: (err as Error).message }, `forward add refused: ${(err as Error).message}`);
        throw err;
      }
      log.info({ spec, forward: added.id, state: added.state }, `forward ${added.id} added via control API`);
      return send(res, 201, added);
    }
    if (req.method === 'DELETE' && url.pathname.startsWith('/v1/forwards/')) {
      const id = decodeId(url.pathname.slice('/v1/forwards/'.length));
      if (!agent.forwards().some((f) => f.id === id)) throw new HttpError(404, `no forward with id ${id}`);
      await agent.removeForward(id);
      log.info({ id }, `forward ${id} removed via control API`);
      return send(res, 200, { removed: id });
    }
    if (route === 'POST /v1/mounts/retry') {
      const retrying = agent.retryMounts?.() ?? false;
      if (retrying) log.info('mount retry requested via control API');
      return send(res, 202, { retrying });
    }
    if (route === 'POST /v1/shutdown') {
      const reason = shutdownReason(await readJson(req));
      log.info({ reason }, 'shutdown requested via control API');
      send(res, 202, { stopping: true });
      res.once('finish', () => shutdown(reason));
      return;
    }
    const known = [
      '/v1/status',
      '/v1/config',
      '/v1/forwards',
      '/v1/mounts',
      '/v1/mounts/retry',
      '/v1/shutdown',
      '/v1/events',
    ];
    if (known.includes(url.pathname)) throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`);
    throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`);
  }

  const events = new EventStream(agent, log);
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => events.upgrade(req, socket, head));

  // Clients (`forward ls --watch`, `up`) hold connections open; track them so close() does not wait for them.
  const sockets = new Set<Socket>();
  http.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });

  await claimSocketPath(socketPath).catch((err: Error) => {
    if (err instanceof SocketBusyError) err.message += ' (is the agent running? try `tether status`)';
    throw err;
  });
  await listen(http, socketPath);
  restrictSocket(socketPath);
  log.info({ socket: socketPath }, 'control API listening');

  return {
    socketPath,
    async close() {
      // Followers are told first, and get a moment to read up to the close frame; then every connection is cut.
      await events.close();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${path}: ${err.message}`)));
    server.listen(path, () => resolve());
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Maps an error from the agent to a status: the request's own fault by its class, else 500. */
function statusOf(err: unknown): number {
  if (err instanceof DuplicateForwardError) return 409;
  if (err instanceof ForwardRefusedError) return 422;
  return 500;
}

function decodeId(raw: string): string {
  try {
    const id = decodeURIComponent(raw);
    if (id.length === 0) throw new Error('empty');
    return id;
  } catch {
    throw new HttpError(400, `bad forward id in URL: ${raw}`);
  }
}

/** The caller's reason (`tether up` stops an agent whose boot failed, and says why), on one bounded line. */
function shutdownReason(body: unknown): string {
  const given = (body as { reason?: unknown } | undefined)?.reason;
  if (typeof given !== 'string' || given.trim() === '') return 'shutdown requested via control API';
  const text = given.replace(/\s+/g, ' ').trim();
  return `${text.length > 500 ? `${text.slice(0, 500)}…` : text} (shutdown via control API)`;
}

/** The request's JSON body; undefined when it has none. */
function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      // Past the cap the rest is read and dropped, so the client still gets its 413 instead of a reset.
      if (size > MAX_BODY) reject(new HttpError(413, `request body over ${MAX_BODY} bytes`));
      else chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (chunks.length === 0) return resolve(undefined);
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(new HttpError(400, `request body is not JSON: ${(err as Error).message}`));
      }
    });
  });
}
