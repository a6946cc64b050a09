// UDP relay of one agent client: datagrams from the host arrive with a flow id and a guest listener address; each
// flow gets its own connected dgram socket towards that listener, and the listener's replies go back on the same flow.
// Owns flows, their idle expiry and caps, and the rule that only UDP listeners present in the guest may be targeted
// (the host must not be able to use the agent to send anywhere else). Knows nothing of the link: callbacks send.
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { DropLog, LIMITS, type UdpDatagram } from '@tether/protocol';
import type { Logger } from '../log.js';

export interface UdpRelayOptions {
  /** A flow without traffic in either direction for this long is closed (and the host told). */
  idleMs?: number;
  maxFlows?: number;
  /**
   * Datagrams kept per flow for a move to the other loopback (see Flow.unanswered), and held while its socket
   * connects, as long as they also fit in maxPendingBytes; beyond that they are dropped (UDP may drop).
   */
  maxPending?: number;
  /** Bytes held per flow while its socket connects: a burst that opens a flow arrives before the connect is done. */
  maxPendingBytes?: number;
}

interface UdpTarget {
  proto: string;
  ip: string;
  port: number;
}

interface UdpRelayDeps {
  /** The guest's listeners right now; only UDP ones are consulted. */
  listeners: () => Iterable<UdpTarget>;
  reply: (flow: number, data: Uint8Array) => void;
  /** The flow ended on this side (idle, refused, socket error): tell the host, with why when it was refused. */
  closed: (flow: number, refused?: string) => void;
  log: Logger;
}

const WILDCARD_TO_LOOPBACK: Record<string, string> = { '0.0.0.0': '127.0.0.1', '::': '::1' };
const LOOPBACK = new Set(['127.0.0.1', '::1']);

/**
 * Where a datagram for `ip:port` may be sent, or null when no guest UDP listener accepts it there. A listener on a
 * wildcard address is reached via loopback; the host may name either the wildcard or the loopback address, or
 * another of the guest's own addresses (`forward add 5300:127.0.0.5:53/udp`, the guest's LAN address), which a
 * wildcard listener takes as the kernel would (sent to it on loopback). A loopback address with no listener falls back to the other loopback:
 * `forward add udp/5353` names 127.0.0.1, and a service bound to `localhost` may hold ::1 only (or the other way
 * round). `own` tells whether an address is one of the guest's (looked up only for a wildcard listener).
 */
export function resolveUdpTarget(
  ip: string,
  port: number,
  listeners: Iterable<UdpTarget>,
  own: (ip: string) => boolean = ownAddress,
): string | null {
  const atPort: string[] = [];
  for (const l of listeners) if (l.proto === 'udp' && l.port === port) atPort.push(l.ip);
  const direct = reach(ip, atPort, own);
  if (direct !== null || !LOOPBACK.has(ip)) return direct;
  return reach(ip === '127.0.0.1' ? '::1' : '127.0.0.1', atPort, own);
}

/** The address to send to for `ip` when the guest's UDP listeners at the port are bound to `bound`. */
function reach(ip: string, bound: readonly string[], own: (ip: string) => boolean): string | null {
  const family = isIP(ip);
  for (const raw of bound) {
    // An IPv6 socket bound to a v4-mapped address (`::ffff:127.0.0.1`, as Java and .NET bind "127.0.0.1") takes the
    // IPv4 datagrams of that address; the host names it by the IPv4 address.
    const b = raw.startsWith('::ffff:') && isIP(raw.slice(7)) === 4 ? raw.slice(7) : raw;
    if (b === ip) return WILDCARD_TO_LOOPBACK[ip] ?? ip;
    // `::` is dual-stack by default. Sent to loopback: a wildcard socket answers from the address the kernel picks
    // for the way back (127.0.0.1 for all of 127.0.0.0/8), which the flow's connected socket must be connected to.
    const wildcard = b === '::' || (family === 4 && b === '0.0.0.0');
    if (wildcard && family !== 0 && !(ip in WILDCARD_TO_LOOPBACK) && own(ip)) return family === 4 ? '127.0.0.1' : '::1';
  }
  return null;
}

/** Whether the guest holds `ip`: all of 127.0.0.0/8 and ::1, or an address of one of its interfaces. */
function ownAddress(ip: string): boolean {
  if (LOOPBACK.has(ip) || (isIP(ip) === 4 && ip.startsWith('127.'))) return true;
  return Object.values(networkInterfaces()).some((addrs) => addrs?.some((a) => a.address === ip));
}

interface Flow {
  id: number;
  ip: string;
  port: number;
  /** Null until connectFlow made it. */
  socket: Socket | null;
  connected: boolean;
  pending: Uint8Array[];
  pendingBytes: number;
  /**
   * Datagrams sent in the flow's first UNANSWERED_MS without a reply (at most maxPending): sent again if it moves to
   * the other loopback. A refusal comes within milliseconds; later, nothing is kept (one-way protocols never reply).
   */
  unanswered: Uint8Array[] | null;
  openedAt: number;
  /** Whether the flow moved once already (see retarget). */
  moved: boolean;
  timer: NodeJS.Timeout;
}

/** How long a new flow keeps what it sent for a move to the other loopback (see Flow.unanswered). */
const UNANSWERED_MS = 1000;

export class UdpRelay {
  private readonly idleMs: number;
  private readonly maxFlows: number;
  private readonly maxPending: number;
  private readonly maxPendingBytes: number;
  private readonly flowsById = new Map<number, Flow>();
  private closed = false;
  /** Refusals come once per datagram a host client sends: a flood costs a line per interval, not one each. */
  private readonly refused: DropLog;
  private readonly retargeted: DropLog;

  constructor(
    private readonly deps: UdpRelayDeps,
    options: UdpRelayOptions = {},
  ) {
    this.idleMs = options.idleMs ?? 60_000;
    this.maxFlows = options.maxFlows ?? LIMITS.udpFlows;
    this.maxPending = options.maxPending ?? 64;
    this.maxPendingBytes = options.maxPendingBytes ?? LIMITS.udpSocketBufferBytes;
    this.refused = new DropLog(deps.log, 'udp flows refused');
    this.retargeted = new DropLog(deps.log, 'udp datagrams naming another target than their flow');
  }

  get flows(): number {
    return this.flowsById.size;
  }

  onDatagram(d: UdpDatagram): void {
    if (this.closed) return;
    let flow = this.flowsById.get(d.flow);
    if (flow && (flow.ip !== d.ip || flow.port !== d.port)) {
      // The flow ends, so the host starts a new one for that client instead of sending into this until it idles out.
      this.retargeted.add(
        { flow: d.flow, flowTarget: `${flow.ip}:${flow.port}`, target: `${d.ip}:${d.port}` },
        'udp datagram names another target than its flow; dropped, and the flow ended',
      );
      this.end(flow, 'another target named', true);
      return;
    }
    const target = flow ?? this.open(d);
    if (!target) return;
    flow = target;
    flow.timer.refresh();
    if (flow.unanswered && performance.now() - flow.openedAt > UNANSWERED_MS) flow.unanswered = null;
    if (flow.unanswered && flow.unanswered.length < this.maxPending) flow.unanswered.push(Buffer.from(d.data));
    if (flow.connected) flow.socket?.send(d.data);
    else if (flow.pendingBytes + d.data.byteLength <= this.maxPendingBytes) {
      // Held until the socket is connected: as much as the kernel would buffer for a socket that already was.
      flow.pending.push(d.data);
      flow.pendingBytes += d.data.byteLength;
    }
  }

  /** The host ended a flow. */
  onClose(flowId: number): void {
    const flow = this.flowsById.get(flowId);
    if (flow) this.end(flow, 'closed by host', false);
  }

  /** The client went away: end every flow without telling it. */
  close(): void {
    this.closed = true;
    this.refused.stop();
    this.retargeted.stop();
    for (const flow of [...this.flowsById.values()]) this.end(flow, 'client gone', false);
  }

  private open(d: UdpDatagram): Flow | null {
    const { log } = this.deps;
    if (this.flowsById.size >= this.maxFlows) {
      const why = `too many flows (${this.maxFlows}) for this client`;
      this.refused.add({ flow: d.flow, maxFlows: this.maxFlows }, `udp flow to ${d.ip}:${d.port} refused: ${why}`);
      this.deps.closed(d.flow, why);
      return null;
    }
    const dest = resolveUdpTarget(d.ip, d.port, this.deps.listeners());
    if (dest === null) {
      const why = `no guest UDP listener at ${d.ip}:${d.port}`;
      this.refused.add({ flow: d.flow, ip: d.ip, port: d.port }, `udp flow refused: ${why}`);
      this.deps.closed(d.flow, why);
      return null;
    }
    const flow: Flow = {
      id: d.flow,
      ip: d.ip,
      port: d.port,
      socket: null,
      connected: false,
      pending: [],
      pendingBytes: 0,
      unanswered: [],
      openedAt: performance.now(),
      moved: false,
      timer: setTimeout(() => this.end(flow, 'idle', true), this.idleMs),
    };
    flow.timer.unref();
    this.flowsById.set(flow.id, flow);
    // A guest with IPv6 turned off has no ::1 to bind: a `::` (dual-stack) or IPv4 listener is then reached on
    // 127.0.0.1, as TCP forwards are.
    const fallback =
      dest === '::1' && resolveUdpTarget('127.0.0.1', d.port, this.deps.listeners()) ? '127.0.0.1' : null;
    this.connectFlow(flow, dest, fallback);
    log.debug({ flow: flow.id, dest, port: d.port }, 'udp flow opened');
    return flow;
  }

  /**
   * Binds and connects the flow's socket to `dest`. When that fails before it is connected, tries `fallback`, and
   * without one ends the flow and tells the host, instead of holding its datagrams until the idle timeout.
   */
  private connectFlow(flow: Flow, dest: string, fallback: string | null): void {
    const { log } = this.deps;
    const socket = createSocket({
      type: isIP(dest) === 6 ? 'udp6' : 'udp4',
      recvBufferSize: LIMITS.udpSocketBufferBytes,
    });
    flow.socket = socket;
    socket.on('message', (data) => {
      flow.timer.refresh();
      flow.unanswered = null;
      this.deps.reply(flow.id, data);
    });
    const failed = (err: Error): void => {
      if (flow.connected || flow.socket !== socket || this.flowsById.get(flow.id) !== flow) return;
      try {
        socket.close();
      } catch {
        // a failed bind closes it already
      }
      if (fallback) {
        log.debug({ flow: flow.id, dest, fallback, err }, 'udp flow falls back to another loopback');
        this.connectFlow(flow, fallback, null);
        return;
      }
      log.warn({ flow: flow.id, dest, port: flow.port, err }, 'udp flow cannot reach its target');
      this.end(flow, 'connect failed', true, `cannot reach ${dest}:${flow.port} in the guest: ${err.message}`);
    };
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A connected UDP socket reports ICMP port-unreachable as ECONNREFUSED on a later send: nothing listens at
      // `dest` (any more). The other loopback may have the listener; otherwise keep the flow, the host decides.
      if (!flow.connected) failed(err);
      else if (err.code !== 'ECONNREFUSED' || !this.retarget(flow, dest))
        log.debug({ flow: flow.id, dest, port: flow.port, err }, 'udp flow socket error');
    });
    // Connected, so only the target's replies are accepted; bound to loopback when the target is, so the flow's
    // socket is never reachable from outside the guest.
    const bindAddress = LOOPBACK.has(dest) ? dest : undefined;
    socket.bind({ port: 0, address: bindAddress, exclusive: true }, () => {
      socket.connect(flow.port, dest, (err?: Error) => {
        if (err) {
          failed(err);
          return;
        }
        flow.connected = true;
        flow.pendingBytes = 0;
        for (const data of flow.pending.splice(0)) socket.send(data);
      });
    });
  }

  /**
   * Moves a refused flow, once, to the other loopback when a listener there takes it: a `::` listener with
   * IPV6_V6ONLY (nginx's default, Go's "udp6") has no 127.0.0.1, and of two listeners on a port, one may have gone.
   * What was sent before any reply goes again.
   */
  private retarget(flow: Flow, dest: string): boolean {
    if (flow.moved || !LOOPBACK.has(dest)) return false;
    const other = dest === '127.0.0.1' ? '::1' : '127.0.0.1';
    if (resolveUdpTarget(other, flow.port, this.deps.listeners()) !== other) return false;
    flow.moved = true;
    try {
      flow.socket?.close();
    } catch {
      // closed already
    }
    flow.connected = false;
    flow.pending = [...(flow.unanswered ?? [])];
    flow.pendingBytes = flow.pending.reduce((n, d) => n + d.byteLength, 0);
    flow.unanswered = null;
    this.deps.log.info(
      {
        flow: flow.id,
        dest,
        to: other,
        port: flow.port,
      },
      'udp flow refused; moved to the other loopback',
    );
    this.connectFlow(flow, other, null);
    return true;
  }

  private end(flow: Flow, reason: string, notify: boolean, refused?: string): void {
    if (this.flowsById.get(flow.id) !== flow) return;
    this.flowsById.delete(flow.id);
    clearTimeout(flow.timer);
    try {
      flow.socket?.close();
    } catch {
      // already closed by a failed bind
    }
    this.deps.log.debug({ flow: flow.id, reason }, 'udp flow closed');
    if (notify && !this.closed) this.deps.closed(flow.id, refused);
  }
}
