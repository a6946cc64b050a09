// The control API's event stream, WS /v1/events: every AgentEvent as a JSON message to each follower (`forward ls
// --watch`, `up`). A follower too slow to keep up is disconnected; when the agent stops, followers get close code
// 1001 with AGENT_STOPPED and a moment to read up to it. The WebSocket library is loaded on the first upgrade: an
// agent nobody follows does not carry it.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log.js';
import type { AgentApi, AgentEvent } from '../model.js';

/** How long followers get to read up to the close frame when the agent stops. */
const CLOSE_GRACE_MS = 500;

/** The close reason an event follower gets when the agent stops (code 1001). */
const AGENT_STOPPED = 'the agent stopped';

/** A WebSocket client that lets this much pile up is too slow to follow events; it is disconnected. */
const MAX_WS_BUFFER = 4 * 1024 * 1024;

export class EventStream {
  private wss: WebSocketServer | null = null;
  private closed = false;
  private readonly followers = new Set<WebSocket>();

  constructor(
    private readonly agent: Pick<AgentApi, 'on' | 'off'>,
    private readonly log: Logger,
  ) {}

  /** An HTTP upgrade request: followers of /v1/events are taken on, anything else gets a 404. */
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    if (new URL(req.url ?? '/', 'http://tether').pathname !== '/v1/events') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    // The HTTP server dropped its listeners from the socket; an error while ws loads must not go unhandled.
    const onError = () => socket.destroy();
    socket.on('error', onError);
    this.server().then(
      (server) => {
        socket.off('error', onError);
        if (this.closed || socket.destroyed) socket.destroy();
        else server.handleUpgrade(req, socket, head, (ws) => this.follow(ws));
      },
      (err: Error) => {
        socket.off('error', onError);
        this.log.error({ err: err.message }, 'cannot serve /v1/events');
        socket.end('HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n');
      },
    );
  }

  /** Tells the followers the agent stopped, waits until they are gone (at most CLOSE_GRACE_MS), then cuts them. */
  async close(): Promise<void> {
    this.closed = true;
    const { wss } = this;
    if (!wss) return;
    const followers = [...wss.clients];
    const gone = followers.map((ws) => new Promise<void>((done) => ws.once('close', () => done())));
    for (const ws of followers) ws.close(1001, AGENT_STOPPED);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(gone),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    for (const ws of wss.clients) ws.terminate();
    wss.close();
  }

  private async server(): Promise<WebSocketServer> {
    if (!this.wss) {
      const { WebSocketServer } = await import('ws');
      this.wss ??= new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
    }
    return this.wss;
  }

  /** Each follower is served from one listener on the agent: Node warns of a leak past ten listeners. */
  private follow(ws: WebSocket): void {
    this.followers.add(ws);
    if (this.followers.size === 1) this.agent.on('event', this.broadcast);
    const leave = () => {
      if (this.followers.delete(ws) && this.followers.size === 0) this.agent.off('event', this.broadcast);
    };
    ws.on('close', leave);
    ws.on('error', leave);
  }

  private readonly broadcast = (e: AgentEvent): void => {
    const message = JSON.stringify(e);
    for (const ws of this.followers) {
      if (ws.bufferedAmount > MAX_WS_BUFFER) {
        this.log.warn({ buffered: ws.bufferedAmount }, 'event subscriber too slow; disconnecting it');
        ws.close(1013, 'too slow to follow events');
        continue;
      }
      ws.send(message);
    }
  };
}
