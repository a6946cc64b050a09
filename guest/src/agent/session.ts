// One connected client of the agent: its protocol peer and what it asked for (port deltas, UDP flows, socket paths
// to watch). Owns the request handlers and the client's lifetime; a bad client is closed with a logged reason and
// affects no other.

import type { Socket } from 'node:net';
import { arch, hostname, release, uptime } from 'node:os';
import { type AgentBye, type Info, LIMITS, Peer, type PortDelta, type PortSnapshot } from '@tether/protocol';
import type { FsApplier } from '../inotify/applier.js';
import { InvalidFsPathError } from '../inotify/paths.js';
import type { Logger } from '../log.js';
import type { ListenEventsState, PortPoller } from '../ports/index.js';
import { UdpRelay, type UdpRelayOptions } from '../relay/udp.js';
import { AGENT_NAME, BUILD_HASH, CAPABILITIES, VERSION } from '../version.js';
import { toWireSnapshot } from './listeners.js';
import { SocketWatch } from './socket-watch.js';

export interface SessionContext {
  poller: PortPoller;
  applier: FsApplier;
  startedAt: number;
  /** Whether kernel listen events wake the poller (ListenEvents), or why not. */
  listenEvents?: () => ListenEventsState;
  udp?: UdpRelayOptions;
  /** Bytes queued towards a client that stops reading before it is dropped (deltas cannot be skipped). */
  maxBuffered?: number;
}

const DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024;

export class Session {
  readonly peer: Peer;
  subscribed = false;
  private readonly relay: UdpRelay;
  private readonly sockets: SocketWatch;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: SessionContext,
    private readonly log: Logger,
  ) {
    this.peer = new Peer(socket, { agent: AGENT_NAME, caps: CAPABILITIES });
    this.relay = new UdpRelay(
      {
        listeners: () => ctx.poller.currentListeners(),
        reply: (flow, data) => {
          // A reply the link cannot take now is dropped, as UDP may; a burst fits in LIMITS.udpQueuedBytes.
          if (!this.peer.closed && this.peer.queuedBytes <= LIMITS.udpQueuedBytes)
            this.peer.notify('udp.reply', { flow, data: data as Uint8Array<ArrayBuffer> });
        },
        closed: (flow, refused) => this.peer.notify('udp.close', refused ? { flow, refused } : { flow }),
        log,
      },
      ctx.udp,
    );
    this.sockets = new SocketWatch((path) => {
      if (!this.peer.closed) this.peer.notify('sockets.changed', { path });
    });
    this.wire();
  }

  /**
   * Sends `bye` as the client's last message and ends the link once it is written out (or after `timeoutMs`, for a
   * client that stopped reading): a destroy alone would drop it if earlier frames still queue behind it.
   */
  async farewell(bye: AgentBye, timeoutMs = 200): Promise<void> {
    this.peer.notify('agent.bye', bye);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.socket.end(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.peer.close(bye.reason);
  }

  /** Sends a port delta if this client subscribed; drops a client whose unread backlog grew too large. */
  sendDelta(delta: PortDelta): void {
    if (!this.subscribed || this.peer.closed) return;
    this.peer.notify('ports.delta', delta);
    const limit = this.ctx.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    if (this.socket.writableLength > limit) {
      this.peer.close(`client is not reading: ${this.socket.writableLength} bytes queued (limit ${limit})`);
    }
  }

  private wire(): void {
    const { peer, ctx, log } = this;
    peer.on('ready', (hello) => log.info({ remote: hello.agent, caps: hello.caps }, 'client ready'));
    peer.on('close', (reason: string) => {
      this.relay.close();
      this.sockets.stop();
      log.info({ reason }, 'client closed');
    });
    peer.on('unhandled', (name: string) => log.debug({ event: name }, 'event without handler ignored'));
    peer.on('unknownEvent', (name: string) =>
      log.warn({ event: name }, `ignoring unknown event ${name} from the host (a newer tether?)`),
    );
    peer.on('handlerError', (name: string, err: Error) => log.error({ event: name, err }, 'event handler failed'));

    peer.handle('info', () => this.info());
    peer.handle('agent.build', () => ({ version: VERSION, build: BUILD_HASH }));
    peer.handle('ports.snapshot', () => this.snapshot());
    peer.handle('ports.subscribe', () => {
      const snapshot = this.snapshot();
      this.subscribed = true;
      return snapshot;
    });
    peer.handle('sockets.watch', ({ paths }) => {
      this.sockets.set(paths);
      return {};
    });
    peer.onEvent('udp.dgram', (d) => this.relay.onDatagram(d));
    peer.onEvent('udp.close', (d) => this.relay.onClose(d.flow));
    peer.onEvent('fs.events', (batch) => {
      try {
        ctx.applier.submit(batch);
      } catch (err) {
        if (!(err instanceof InvalidFsPathError)) throw err;
        peer.close(err.message, err);
      }
    });
  }

  /** A current full snapshot: scanning first means a listener opened just before the request is in it. */
  private snapshot(): PortSnapshot {
    this.ctx.poller.scanNow();
    return toWireSnapshot(this.ctx.poller.snapshot());
  }

  private info(): Info {
    const stats = this.ctx.poller.stats();
    return {
      version: VERSION,
      kernel: release(),
      arch: arch(),
      hostname: hostname(),
      uptimeSec: uptime(),
      startedAt: this.ctx.startedAt,
      pid: process.pid,
      uid: process.getuid?.() ?? 0,
      caps: CAPABILITIES,
      scanIntervalMs: stats.intervalMs,
      lastScanMs: stats.lastScanMs,
      listenEvents: this.ctx.listenEvents?.() ?? { on: false, detail: 'not used by this agent' },
      listeners: this.ctx.poller.count,
    };
  }
}
