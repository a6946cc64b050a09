// UDP forwarding: host dgram sockets for guest UDP listeners, and the flow table that carries their datagrams over
// the agent link (`udp.dgram` with a flow id per distinct host client) and routes `udp.reply` back to that client.
// Idle flows expire, and at the cap the least recently used one makes room; datagrams are dropped (and counted)
// when the link is down or its buffer is full, as UDP may, and those the guest refuses go to their forward as failures.
import dgram from 'node:dgram';
import net from 'node:net';
import { DropLog, LIMITS, type Peer } from '@tether/protocol';
import { formatAddr } from '../address.js';
import { guestText } from '../inert-text.js';
import type { Logger } from '../log.js';
import type { GuestTarget, HostBinding, Route } from './binding.js';

interface Flow {
  id: number;
  socket: dgram.Socket;
  client: { address: string; port: number };
  target: GuestTarget;
  key: string;
  /** performance.now(): idle expiry must not follow wall-clock steps. */
  lastUsed: number;
}

interface UdpFlowsOptions {
  logger: Logger;
  idleMs?: number;
  maxFlows?: number;
}

/** The host end of the UDP relay: one per agent, shared by every UDP binding. */
export class UdpFlows {
  /** Datagrams not delivered (link down or full, flow cap, oversize). */
  dropped = 0;
  private peer: Peer | null = null;
  private nextId = 1;
  private readonly byId = new Map<number, Flow>();
  private readonly byKey = new Map<string, Flow>();
  private readonly sweep: NodeJS.Timeout;
  private readonly idleMs: number;
  private readonly maxFlows: number;
  private readonly log: Logger;
  /** Replies for flows this side does not know (expired here, or made up by the guest). */
  private readonly unknownReplies: DropLog;
  /** Datagrams from host clients that could not go to the guest. */
  private readonly undelivered: DropLog;
  /** Flows ended early to make room at the cap. */
  private readonly evicted: DropLog;

  constructor(opts: UdpFlowsOptions) {
    this.log = opts.logger;
    this.unknownReplies = new DropLog(this.log, 'udp reply for unknown flow');
    this.undelivered = new DropLog(this.log, 'udp datagrams from host clients');
    this.evicted = new DropLog(this.log, 'udp flows ended to make room');
    this.idleMs = opts.idleMs ?? 60_000;
    this.maxFlows = opts.maxFlows ?? LIMITS.udpFlows;
    this.sweep = setInterval(() => this.expire(), Math.max(1_000, this.idleMs / 2));
    this.sweep.unref();
  }

  get flows(): number {
    return this.byId.size;
  }

  /** A new link: flows of the previous one mean nothing to the new guest relay. */
  attach(peer: Peer): void {
    this.clear();
    this.peer = peer;
    peer.onEvent('udp.reply', (r) => this.onReply(r.flow, r.data));
    peer.onEvent('udp.close', (c) => this.closedByGuest(c.flow, c.refused));
    peer.once('close', () => {
      if (this.peer === peer) {
        this.peer = null;
        this.clear();
      }
    });
  }

  /** A datagram from a host client on `socket` for `target`. */
  send(socket: dgram.Socket, bindingAddr: string, client: dgram.RemoteInfo, target: GuestTarget, data: Buffer): void {
    const peer = this.peer;
    const why =
      !peer || peer.closed
        ? 'the agent link is down'
        : peer.queuedBytes > LIMITS.udpQueuedBytes
          ? `the agent link is behind (${peer.queuedBytes} bytes wait to be sent)`
          : data.length > LIMITS.datagramBytes
            ? `${data.length} bytes is more than a datagram holds`
            : null;
    const from = formatAddr(client.address, client.port);
    if (!peer || why) {
      this.drop(from, target, why ?? 'the agent link is down');
      return;
    }
    const key = `${bindingAddr}|${from}`;
    let flow = this.byKey.get(key);
    if (flow && (flow.target.guestIP !== target.guestIP || flow.target.guestPort !== target.guestPort)) {
      // The host port now leads elsewhere (`forward add` of another mapping, `forward rm` handing it back): the guest
      // relay's flow is bound to the old target, so the client starts a new one.
      this.end(flow.id, true);
      flow = undefined;
    } else if (flow && flow.target !== target) {
      // The same guest address under another forward (one re-made): its counters take the flow over.
      flow.target.stats.connections--;
      target.stats.connections++;
      flow.target = target;
    }
    if (!flow) {
      // At the cap the flow used least recently makes room, as conntrack does: clients that sent once and went away
      // (a socket per query) would otherwise turn every new client away until they expire.
      if (this.byId.size >= this.maxFlows) this.evictLeastRecent();
      flow = {
        id: this.allocId(),
        socket,
        client: { address: client.address, port: client.port },
        target,
        key,
        lastUsed: 0,
      };
      this.byId.set(flow.id, flow);
      this.byKey.set(key, flow);
      target.stats.connections++;
    }
    flow.lastUsed = performance.now();
    target.stats.bytesIn += data.length;
    // A Buffer is a Uint8Array on the wire; the cast only widens its backing-buffer type.
    const bytes = data as unknown as Uint8Array<ArrayBuffer>;
    peer.notify('udp.dgram', { flow: flow.id, ip: target.guestIP, port: target.guestPort, data: bytes });
  }

  /** A binding closed: its flows end. */
  endSocket(socket: dgram.Socket): void {
    for (const flow of [...this.byId.values()]) if (flow.socket === socket) this.end(flow.id, true);
  }

  stop(): void {
    clearInterval(this.sweep);
    this.unknownReplies.stop();
    this.undelivered.stop();
    this.evicted.stop();
    this.clear();
  }

  private drop(from: string, target: GuestTarget, why: string): void {
    this.dropped++;
    const to = formatAddr(target.guestIP, target.guestPort);
    this.undelivered.add({ client: from, guest: to }, `udp datagram from ${from} to guest ${to} dropped: ${why}`);
  }

  private allocId(): number {
    do this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1;
    while (this.byId.has(this.nextId));
    return this.nextId;
  }

  private onReply(id: number, data: Uint8Array): void {
    const flow = this.byId.get(id);
    if (!flow) {
      this.dropUnknownReply(id);
      return;
    }
    flow.lastUsed = performance.now();
    flow.target.stats.bytesOut += data.byteLength;
    flow.socket.send(data, flow.client.port, flow.client.address, (err) => {
      if (err)
        this.log.debug(
          { err: err.message, flow: id },
          `udp reply to ${formatAddr(flow.client.address, flow.client.port)} failed`,
        );
    });
  }

  /** A flood of replies for unknown flows costs one log line per interval, not one per datagram. */
  private dropUnknownReply(id: number): void {
    this.dropped++;
    this.unknownReplies.add(
      { flow: id },
      `udp reply for unknown flow ${id} dropped (expired here, or the guest made it up)`,
    );
  }

  /**
   * The guest relay ended a flow. One it refused goes to its forward as a failed open (warned about at a bounded rate,
   * as a refused TCP connection is): the datagram went nowhere.
   */
  private closedByGuest(id: number, refused: string | undefined): void {
    const flow = this.byId.get(id);
    this.end(id, false);
    if (!flow || refused === undefined) return;
    this.dropped++;
    flow.target.opened(
      new Error(
        `the guest agent refused udp from ${formatAddr(flow.client.address, flow.client.port)}: ${guestText(refused)}`,
      ),
    );
  }

  private end(id: number, notify: boolean): void {
    const flow = this.byId.get(id);
    if (!flow) return;
    this.byId.delete(id);
    this.byKey.delete(flow.key);
    flow.target.stats.connections--;
    if (notify) this.peer?.notify('udp.close', { flow: id });
  }

  private evictLeastRecent(): void {
    let oldest: Flow | undefined;
    for (const flow of this.byId.values()) if (!oldest || flow.lastUsed < oldest.lastUsed) oldest = flow;
    if (!oldest) return;
    this.evicted.add(
      { maxFlows: this.maxFlows },
      `udp flow table full (${this.maxFlows} flows): the least recently used flows make room for new clients`,
    );
    this.end(oldest.id, true);
  }

  private expire(): void {
    const cutoff = performance.now() - this.idleMs;
    for (const flow of [...this.byId.values()]) if (flow.lastUsed < cutoff) this.end(flow.id, true);
  }

  private clear(): void {
    for (const id of [...this.byId.keys()]) this.end(id, false);
  }
}

/** A host UDP socket for one host address; every datagram goes to the guest target the route picks. */
export class UdpBinding implements HostBinding {
  readonly address: string;
  private socket: dgram.Socket | null = null;
  private readonly family: 4 | 6;

  constructor(
    private readonly hostIP: string,
    private readonly hostPort: number,
    private readonly route: Route,
    private readonly flows: UdpFlows,
    private readonly log: Logger,
  ) {
    this.address = formatAddr(hostIP, hostPort);
    this.family = net.isIPv6(hostIP) ? 6 : 4;
  }

  listen(): Promise<void> {
    const socket = dgram.createSocket({
      type: this.family === 6 ? 'udp6' : 'udp4',
      ipv6Only: this.family === 6,
      recvBufferSize: LIMITS.udpSocketBufferBytes,
    });
    return new Promise((resolve, reject) => {
      socket.once('error', (err) => {
        socket.close();
        reject(err);
      });
      socket.bind({ address: this.hostIP, port: this.hostPort, exclusive: true }, () => {
        socket.removeAllListeners('error');
        socket.on('error', (err) => this.log.warn({ address: this.address }, `udp ${this.address}: ${err.message}`));
        socket.on('message', (data, rinfo) => {
          const target = this.route(this.family);
          if (target) this.flows.send(socket, this.address, rinfo, target, data);
        });
        this.socket = socket;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return Promise.resolve();
    this.flows.endSocket(socket);
    return new Promise((resolve) => socket.close(() => resolve()));
  }
}
