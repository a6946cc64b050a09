// The guest agent server: a unix socket accepting any number of clients, each a protocol Session; one port poller
// and one fs applier shared by all of them. Owns the socket's lifetime (stale file, permissions, unlink on close)
// and the fan-out of port deltas. A client that misbehaves or stalls is closed alone; new clients are always accepted.

import { unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { AgentBye } from '@tether/protocol';
import { FsApplier, type FsApplierOptions } from '../inotify/applier.js';
import { type Logger, silentLogger } from '../log.js';
import {
  DnatSource,
  ListenEvents,
  type ListenEventsState,
  PortPoller,
  type ScanDelta,
  TableAnchors,
} from '../ports/index.js';
import type { UdpRelayOptions } from '../relay/udp.js';
import { toWireDelta } from './listeners.js';
import { resolveOwner } from './owner.js';
import { Session } from './session.js';
import { DEFAULT_SOCKET_PATH, ensureSocketDir, removeStaleSocket, restrictSocket } from './socket.js';

export interface AgentServerOptions {
  socketPath?: string;
  /** User (name or uid) who may connect besides root; the socket is chowned to them. */
  socketOwner?: string;
  log?: Logger;
  /** Injected in tests (e.g. to see the test process's own listeners); default: a poller excluding our sockets. */
  poller?: PortPoller;
  udp?: UdpRelayOptions;
  fs?: FsApplierOptions;
  /** See SessionContext.maxBuffered. */
  maxBuffered?: number;
  /** Follow the kernel's listen events as root (ListenEvents); default true. */
  listenEvents?: boolean;
}

export class AgentServer {
  readonly socketPath: string;
  private readonly log: Logger;
  private readonly poller: PortPoller;
  private readonly listenEvents: ListenEvents | null;
  /** What `info` says about listen events when this agent does not use them. */
  private readonly noListenEvents: ListenEventsState;
  private readonly applier: FsApplier;
  private readonly sessions = new Set<Session>();
  private readonly server: Server;
  private anchors: TableAnchors | null = null;
  private readonly startedAt = Date.now();
  private nextClient = 1;

  constructor(private readonly options: AgentServerOptions = {}) {
    this.socketPath = options.socketPath ?? DEFAULT_SOCKET_PATH;
    this.log = options.log ?? silentLogger;
    // As root, ports that only a DNAT rule publishes (container networks without a proxy process) count too, and the
    // kernel's listen events (tracefs) wake the poller.
    const root = process.getuid?.() === 0;
    const sources = root ? [new DnatSource({ log: this.log.child({ component: 'dnat' }) })] : [];
    const follow = root && !options.poller && options.listenEvents !== false;
    this.listenEvents = follow ? new ListenEvents({ log: this.log.child({ component: 'ports' }) }) : null;
    this.noListenEvents = { on: false, detail: root ? 'turned off' : 'needs root' };
    this.poller = options.poller ?? new PortPoller({ sources, triggers: this.listenEvents ? [this.listenEvents] : [] });
    this.applier = new FsApplier(this.log.child({ component: 'fs' }), options.fs);
    this.server = createServer((socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error({ socket: this.socketPath, err }, 'agent socket error'));
  }

  get clients(): number {
    return this.sessions.size;
  }

  async start(): Promise<void> {
    const owner = this.options.socketOwner ? resolveOwner(this.options.socketOwner) : null;
    ensureSocketDir(this.socketPath);
    await removeStaleSocket(this.socketPath);
    // The umask keeps the socket private from the moment it exists, before the chmod below.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(this.socketPath, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    restrictSocket(this.socketPath, owner);
    // Before the poller starts, so that the listener the anchors are made with is never seen.
    this.anchors = await TableAnchors.open(this.log.child({ component: 'ports' }));
    this.poller.on('delta', this.onDelta);
    this.poller.on('error', this.onScanError);
    this.poller.start();
    this.log.info({ socket: this.socketPath, owner: owner?.user ?? null, uid: owner?.uid ?? null }, 'agent listening');
  }

  /** Stops serving; `bye` is each client's last message (the host learns why the link ends, see AgentBye). */
  async close(bye?: AgentBye): Promise<void> {
    this.poller.stop();
    this.poller.off('delta', this.onDelta);
    this.poller.off('error', this.onScanError);
    this.applier.close();
    this.anchors?.close();
    await Promise.all([...this.sessions].map((s) => (bye ? s.farewell(bye) : s.peer.close('agent shutting down'))));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.socketPath);
    } catch {
      // already gone (server.close unlinks it on some platforms)
    }
    this.log.info({ socket: this.socketPath }, 'agent stopped');
  }

  private readonly onDelta = (delta: ScanDelta): void => {
    const wire = toWireDelta(delta);
    this.log.debug({ seq: delta.seq, added: delta.added.length, removed: delta.removed.length }, 'ports changed');
    for (const s of this.sessions) s.sendDelta(wire);
  };

  private readonly onScanError = (err: Error): void => {
    this.log.warn({ err }, 'port scan failed');
  };

  private accept(socket: Socket): void {
    const log = this.log.child({ component: 'agent', client: this.nextClient++ });
    const session = new Session(
      socket,
      {
        poller: this.poller,
        applier: this.applier,
        startedAt: this.startedAt,
        listenEvents: () => this.listenEvents?.state ?? this.noListenEvents,
        udp: this.options.udp,
        maxBuffered: this.options.maxBuffered,
      },
      log,
    );
    this.sessions.add(session);
    session.peer.on('close', () => this.sessions.delete(session));
    log.info({ clients: this.sessions.size }, 'client connected');
  }
}
