// The forwarding engine: reconciles the desired forwards (guest listeners from the agent link, static rules from
// tether.yaml, runtime adds) into host bindings and keeps each forward's state. Owns the forwards: which one a guest
// listener becomes (its rule, folded into an explicit forward of its port, left out by the cap), their states and
// one log line per change. The forward record is in forward.ts and its state in state.ts; the shared host bindings
// and their bind retries live in host-bindings.ts, unix forwards' looks at their guest sockets in socket-look.ts,
// and the sockets themselves in tcp.ts, udp.ts and unix.ts.
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { basename, join } from 'node:path';
import type { Listener, Peer } from '@tether/protocol';
import { formatAddr, ipOfAddr, portOfAddr, sshPortTaken, takesSshPort } from '../address.js';
import { expandHome } from '../config/paths.js';
import { isSocketRule, type PortForward, type PortRule, type SocketRule } from '../config/schema.js';
import { ownFileAt } from '../instance.js';
import type { Logger } from '../log.js';
import {
  compareForwards,
  type ForwardHolder,
  type ForwardSource,
  type ForwardSpec,
  type ForwardState,
  type ForwardView,
  isGuestServiceBelow1024,
} from '../model.js';
import {
  ChannelOpenError,
  OPEN_ADMINISTRATIVELY_PROHIBITED,
  OPEN_CONNECT_FAILED,
  type SshSession,
} from '../ssh/index.js';
import type { HostBinding, Route } from './binding.js';
import { type CapKind, ForwardCaps } from './caps.js';
import { ChurnLog } from './churn-log.js';
import { DuplicateForwardError, ForwardRefusedError } from './errors.js';
import { type Forward, type ForwardInit, newForward, type Proto, type Reason, toView } from './forward.js';
import { loopbackTarget } from './guest-loopback.js';
import { bindingKey, HostBindings, keyCovers, keysOverlap, RETRYING } from './host-bindings.js';
import { hostLoopbacks } from './host-loopbacks.js';
import { explicitId, listenerId, portKey, unixId } from './ids.js';
import { sshdRefusal, warnOpenFailure } from './open-failure.js';
import { OpenGate } from './open-gate.js';
import { unprivilegedSpec } from './privileged.js';
import { hostIPsOf, isLocalhost, matchRule, type RuleDecision, unmapIPv4 } from './rules.js';
import { SocketLook } from './socket-look.js';
import { forwardState } from './state.js';
import { TcpBinding } from './tcp.js';
import { UdpBinding, UdpFlows } from './udp.js';
import { UnixBinding } from './unix.js';

interface ForwardEngineOptions {
  ssh: SshSession;
  portForwards: readonly PortForward[];
  maxForwards: number;
  /** Default directory of unix socket forwards' host files. */
  instanceDir: string;
  /** Component logger (`forward`). */
  logger: Logger;
  /** The guest's sshd port (never forwarded) until setSshPort says otherwise; default 22. */
  sshPort?: number;
  /** The host's loopback port of the SSH connection to the VM, when it goes over loopback: never forwarded onto. */
  hostSshPort?: number;
  /** Where forwards that name no host address listen; default the host's loopbacks (host-loopbacks.ts). */
  loopbacks?: readonly string[];
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Another tether instance's forward that holds a busy host address (HostBindings' peerHolder). */
  peerHolder?: (key: string) => Promise<ForwardHolder | null>;
  /** Concurrent channel opens across all forwards. */
  channelOpenConcurrency?: number;
  udpIdleMs?: number;
  /** Asks the guest agent to scan now (AgentLink.requestScan): a detected listener's guest port refused. */
  requestScan?: () => void;
  /** The guest socket paths of the unix forwards, whenever they change (AgentLink.watchSockets). */
  watchSockets?: (paths: string[]) => void;
}

/** Guest listeners the engine remembers, as a multiple of maxForwards (forwarded, ignored and capped ones). */
export const GUEST_LISTENER_FACTOR = 4;

/** A TCP or UDP forward to create: detected (from a guest listener), static (a rule) or runtime (`forward add`). */
interface PortForwardSpec {
  source: ForwardSource;
  id: string;
  proto: 'tcp' | 'udp';
  guestIP: string;
  guestPort: number;
  /** The host addresses to bind hostPort on; none for an ignored listener. */
  hostIPs: string[];
  hostPort: number;
  /** Why a detected listener is not forwarded (a rule, `forward rm`, the guest's sshd); null when it is. */
  ignored?: Forward['ignored'];
  process?: Forward['process'];
}

/** What becomes of a guest listener: forwarded as a rule says, or ignored and why. */
type Decision =
  | Extract<RuleDecision, { action: 'forward' }>
  | { action: 'ignore'; why: NonNullable<Forward['ignored']> };

/** Why a forward that needs the guest agent's link waits (`reason`: why the link is down). */
function linkDown(reason: string): Reason<'link-down'> {
  return { cause: 'link-down', text: `agent link down: ${reason}` };
}

/**
 * A listener's process as forwards show it. A port a DNAT rule publishes has no process but names the rule: pid 0,
 * the guest kernel, answers it.
 */
function processOf(l: Listener): Forward['process'] {
  if (l.pid !== null) return { pid: l.pid, command: l.command ?? '' };
  return l.command ? { pid: 0, command: l.command } : null;
}

/**
 * `, e.g. 10080:80`: the spec that forwards a forward refused a host port below 1024 from one the host user may bind;
 * one on a single host address of its own (`0.0.0.0:443:80`) keeps that address (`0.0.0.0:10443:80`).
 */
function privilegedExample(view: ForwardView): string {
  const hostPort = portOfAddr(view.hostAddrs[0]);
  const guestPort = portOfAddr(view.guestAddr);
  if (!hostPort || !guestPort) return '';
  const ip = view.hostAddrs.length === 1 ? ipOfAddr(view.hostAddrs[0]) : '';
  const own = ip && ip !== '127.0.0.1' && ip !== '::1' ? (ip.includes(':') ? `[${ip}]` : ip) : '';
  return `, e.g. ${unprivilegedSpec(view.proto, hostPort, guestPort, own)}`;
}

/** The host address a new forward wants (`key`) as another forward's binding (`theirs`) holds it, for an error. */
function clash(key: string, theirs: string): string {
  const addr = (k: string) => k.slice(k.indexOf('/') + 1);
  return key === theirs ? `host ${addr(key)}` : `host ${addr(theirs)} (overlapping ${addr(key)})`;
}

/** The reason of a guest listener that `forward rm` ignores until `tether down`. */
const REMOVED = 'removed by the operator';
/** Why detected (and UDP) forwards still wait once SSH is back: the guest agent's link comes up after it. */
const LINK_AFTER_SSH: Reason<'link-down'> = {
  cause: 'link-down',
  text: 'agent link down: waiting for the guest agent (the SSH connection is back)',
};
/**
 * What a detected TCP forward still does while only the agent link is down: its connections are SSH channels to the
 * guest's port, which need no guest agent; what the link brings is news of ports opening and closing.
 */
const STILL_THROUGH_SSH =
  '; its connections still go through SSH, and ports opened or closed meanwhile show once it is back';
/** Forwards named one line each when the engine stops; the rest are counted in one line (up to 4,096 forwards). */
const CLOSED_LINES = 64;

/** Events: `change` (ForwardView), `removed` (id: string). */
export class ForwardEngine extends EventEmitter {
  private readonly caps: ForwardCaps;
  /** Guest listeners (by id) that a static or runtime forward of their port serves (explicitHolding). */
  private readonly folded = new Map<string, Forward>();
  private readonly udp: UdpFlows;
  /** The instance's name (its directory's), for the commands that messages suggest. */
  private readonly instance: string;
  private readonly forwardsById = new Map<string, Forward>();
  /** The static and runtime port forwards among them (few), so a listener's port finds them without a walk. */
  private readonly explicitForwards = new Set<Forward>();
  /**
   * Ids of forwards `forward add` is making: their states are neither logged nor emitted until the add keeps them
   * (keepIfBound), so one it refuses leaves no `error` and `removed` lines for a forward that never was.
   */
  private readonly adding = new Set<string>();
  /** Counters of forwards dropped to be made anew under the same id (dropToRemake): open connections count on. */
  private readonly keptStats = new Map<string, Forward['stats']>();
  private readonly bindings: HostBindings<Forward>;
  private readonly userIgnored = new Set<string>();
  /**
   * Guest ports (`proto/port`) of detected forwards the operator removed: a server restarted on another address of
   * that port (`--host 0.0.0.0` after `127.0.0.1`) stays ignored too, as the operator named the port.
   */
  private readonly userIgnoredPorts = new Set<string>();
  /** The guest's listeners as last reported, so a detected forward can come back when an explicit one goes. */
  private readonly guestListeners = new Map<string, Listener>();
  private readonly opens: OpenGate;
  private readonly log: Logger;
  /** Keeps a forward that comes and goes in a loop from flooding the log. */
  private readonly churn: ChurnLog;
  private readonly rules: PortRule[];
  private readonly socketRules: SocketRule[];
  /** Guest listeners beyond what the engine keeps (GUEST_LISTENER_FACTOR × maxForwards), since the last snapshot. */
  private overflowed = 0;
  /** Why SSH is down (explicit forwards created meanwhile start suspended); null while connected. */
  private sshDown: Reason<'ssh-down'> | null = null;
  /** Why the agent link is down, which static and runtime UDP forwards need too (its relay carries them). */
  private linkDown: Reason<'link-down'> | null = { cause: 'link-down', text: 'agent link not up yet' };
  /** Whether the guest agent watches the unix forwards' socket paths (it says when one changes). */
  private socketsWatched = false;
  /** The paths last handed to watchSockets. */
  private watchedPaths = '';
  private stopped = false;
  private sshPort: number;
  /** Where forwards that name no host address listen: the host's loopbacks, read once. */
  private readonly loopbacks: readonly string[];
  /** The current agent link (UDP datagrams travel over it). */
  private peer: Peer | null = null;

  constructor(private readonly opts: ForwardEngineOptions) {
    super();
    this.instance = basename(opts.instanceDir);
    this.log = opts.logger;
    this.churn = new ChurnLog(this.log, (id) => {
      const f = this.forwardsById.get(id);
      return f ? `${f.state} (guest ${f.guestAddr} → host ${this.servedAddrs(f).join(', ') || 'none'})` : 'removed';
    });
    this.caps = new ForwardCaps(opts.maxForwards, this.log);
    this.sshPort = opts.sshPort ?? 22;
    this.loopbacks = opts.loopbacks ?? hostLoopbacks();
    if (!this.loopbacks.includes('::1'))
      this.log.info(
        { loopbacks: this.loopbacks },
        'this host has no IPv6 loopback (::1): forwards that name no host address listen on 127.0.0.1 only',
      );
    this.rules = opts.portForwards.filter((r): r is PortRule => !isSocketRule(r));
    this.socketRules = opts.portForwards.filter(isSocketRule);
    this.opens = new OpenGate(opts.channelOpenConcurrency ?? 64);
    this.udp = new UdpFlows({ logger: opts.logger, idleMs: opts.udpIdleMs });
    this.bindings = new HostBindings({
      log: this.log,
      retryInitialMs: opts.retryInitialMs,
      retryMaxMs: opts.retryMaxMs,
      peerHolder: opts.peerHolder,
      onChange: (f) => this.refresh(f),
    });
  }

  // ── what the host agent calls ─────────────────────────────────────────────────────────────────────────────────

  /** Sets up static TCP rules and unix socket forwards; resolves when their first bind attempts settled. */
  async start(): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const rule of this.rules.filter((r) => r.static && !r.ignore)) {
      const guestPort = rule.guestPort!;
      const hostPort = rule.hostPort ?? rule.hostPortRange?.[0] ?? guestPort;
      const id = this.explicitIdFor('tcp', rule.guestIP, guestPort, hostPort, rule.hostIP);
      if (this.repeats(rule, id)) continue;
      pending.push(
        this.createPortForward({
          source: 'static',
          id,
          proto: 'tcp',
          guestIP: rule.guestIP,
          guestPort,
          hostIPs: this.hostIPs(rule.hostIP),
          hostPort,
        }),
      );
    }
    for (const rule of this.socketRules) {
      const hostSocket = expandHome(rule.hostSocket ?? join(this.opts.instanceDir, basename(rule.guestSocket)));
      const id = this.unixIdFor(rule.guestSocket, hostSocket);
      if (this.repeats(rule, id)) continue;
      const own = this.ownHostSocket(hostSocket);
      if (own) {
        const index = this.opts.portForwards.indexOf(rule);
        this.log.error({ rule: index, hostSocket }, `portForwards[${index}]: ${own}; skipped`);
        continue;
      }
      pending.push(this.createUnixForward(id, 'static', rule.guestSocket, hostSocket));
    }
    await Promise.all(pending);
  }

  /** Host addresses of a rule or forward that names `hostIP` or none (rules.ts hostIPsOf). */
  private hostIPs(hostIP: string | undefined): string[] {
    return hostIPsOf(hostIP, this.loopbacks);
  }

  /** A static rule whose forward an earlier rule already set up: said, and skipped. */
  private repeats(rule: PortForward, id: string): boolean {
    if (!this.forwardsById.has(id)) return false;
    const index = this.opts.portForwards.indexOf(rule);
    // Not named by `forward`: that forward's own lines would settle this one in `status`, and the rule stays skipped.
    this.log.error(
      { rule: index, repeats: id },
      `portForwards[${index}] repeats forward ${id} of an earlier rule; skipped`,
    );
    return true;
  }

  /** A new agent link: its UDP events go through the flow table, and refused connections ask it to scan. */
  attachPeer(peer: Peer): void {
    this.peer = peer;
    this.udp.attach(peer);
    this.linkDown = null;
    for (const f of this.forwardsById.values()) if (f.source !== 'detected' && f.proto === 'udp') this.resume(f);
    // Also when the link fails before it is up (its setup timed out): the link reports no `down` for that.
    peer.once('close', (reason: string) => {
      if (this.peer === peer && !this.stopped) this.suspendExplicitUdp(linkDown(reason));
    });
  }

  /** A full snapshot of guest listeners: forwards still listening are kept, the others removed. */
  async setListeners(listeners: readonly Listener[]): Promise<void> {
    const desired = new Map<string, Listener>();
    for (const l of listeners) desired.set(listenerId(l), l);
    this.guestListeners.clear();
    for (const [id, l] of desired) this.guestListeners.set(id, l);
    this.caps.clearWaiting(); // worked out again below, from this snapshot
    this.overflowed = 0;
    for (const id of [...this.folded.keys()]) if (!desired.has(id)) this.unfold(id);
    for (const f of [...this.forwardsById.values()]) {
      if (f.source === 'detected' && !desired.has(f.id)) this.drop(f);
    }
    await Promise.all([...desired.values()].map((l) => this.upsertDetected(l)));
    for (const f of this.explicitForwards) {
      this.followLoopback(f);
      this.followProcess(f);
    }
  }

  async applyDelta(delta: { added: readonly Listener[]; removed: readonly Listener[] }): Promise<void> {
    // An address whose socket was replaced comes as removed and added in one delta (one socket of an SO_REUSEPORT
    // group closing, a server restarting between two scans): its forward stays, and takes the new owner below,
    // instead of closing its host listener and refusing the clients that come meanwhile.
    const readded = new Set(delta.added.map(listenerId));
    for (const l of delta.removed) {
      const id = listenerId(l);
      if (readded.has(id)) continue;
      this.guestListeners.delete(id);
      this.caps.forget(id);
      this.unfold(id);
      const f = this.forwardsById.get(id);
      if (f?.source === 'detected') this.drop(f);
      else if (f) this.setProcess(f, null);
      this.followPort(l.proto, l.port);
    }
    // Deltas can add without end (a hostile or broken guest): past the bound, listeners are not even remembered.
    const limit = this.opts.maxForwards * GUEST_LISTENER_FACTOR;
    const added = delta.added.filter((l) => {
      const id = listenerId(l);
      if (this.guestListeners.size >= limit && !this.guestListeners.has(id)) return false;
      this.guestListeners.set(id, l);
      return true;
    });
    if (added.length < delta.added.length) {
      if (this.overflowed === 0)
        this.log.warn(
          { kept: limit },
          `guest reports more than ${limit} listeners; the rest are not tracked until its next full snapshot`,
        );
      this.overflowed += delta.added.length - added.length;
    }
    await Promise.all(added.map((l) => this.upsertDetected(l)));
  }

  /**
   * The agent link is down: detected forwards, and UDP ones whose datagrams its relay carries, keep their host
   * listeners (clients get a quick retry) but say so.
   */
  suspendDetected(reason: string): void {
    for (const f of this.forwardsById.values()) {
      if (f.source !== 'detected' || f.ignored) continue;
      f.suspended = this.sshDown ?? linkDown(`${reason}${f.proto === 'tcp' ? STILL_THROUGH_SSH : ''}`);
      this.refresh(f);
    }
    this.suspendExplicitUdp(linkDown(reason));
  }

  private suspendExplicitUdp(why: Reason<'link-down'>): void {
    this.linkDown = why;
    for (const f of this.forwardsById.values()) if (f.source !== 'detected' && f.proto === 'udp') this.resume(f);
  }

  /**
   * The SSH connection went down (a reason) or is back (null). Static, runtime and unix forwards need nothing but
   * SSH, so they follow it; detected ones follow the agent link instead (they resume with its next snapshot), but
   * while SSH is down that is their reason too: a link that went down first (its ping unanswered in a stall) is not
   * where the fault is.
   */
  setSshDown(reason: string | null): void {
    const was = this.sshDown;
    this.sshDown = reason === null ? null : { cause: 'ssh-down', text: `ssh connection down: ${reason}` };
    // SSH is back but the guest agent's link is not yet (a rebooted guest's agent takes seconds to start): what waits
    // on that link must not go on naming the lost connection, nor the link's own last reason, which was that loss.
    const back = reason === null && was !== null;
    if (back && this.linkDown !== null) this.linkDown = LINK_AFTER_SSH;
    for (const f of this.forwardsById.values()) {
      if (f.ignored) continue;
      if (f.source === 'detected') {
        if (f.suspended && (this.sshDown || (back && f.suspended.cause === 'ssh-down'))) {
          f.suspended = this.sshDown ?? LINK_AFTER_SSH;
          this.refresh(f);
        }
      } else if (reason === null && f.look && f.bindingKeys.length > 0) void this.resumeUnix(f, f.look);
      else this.resume(f);
    }
  }

  /**
   * Whether the guest agent watches the unix forwards' socket paths now. From when it does, a forward showing a cause
   * waits for its word instead of looking on a timer, after one look now (the socket may have changed unwatched);
   * from when it stops, such a forward looks on its timer again.
   */
  setSocketWatch(on: boolean): void {
    if (on === this.socketsWatched) return;
    this.socketsWatched = on;
    for (const f of this.forwardsById.values()) {
      if (!f.look || !f.refused) continue;
      if (on) f.look.changed();
      else f.look.unwatched();
    }
  }

  /** The guest agent saw a watched socket path change: its forwards look at it now. */
  socketChanged(path: string): void {
    for (const f of this.forwardsById.values()) if (f.look && f.guestAddr === path) f.look.changed();
  }

  /** Hands the unix forwards' guest socket paths to the guest agent's watch when they changed. */
  private watchSockets(): void {
    const paths = [...new Set([...this.forwardsById.values()].filter((f) => f.look).map((f) => f.guestAddr))].sort();
    const key = paths.join('\0');
    if (key === this.watchedPaths) return;
    this.watchedPaths = key;
    this.opts.watchSockets?.(paths);
  }

  /**
   * SSH is back: a unix forward looks at its guest socket before it leaves `suspended`, so it does not show
   * `forwarding` for a service that stopped meanwhile.
   */
  private async resumeUnix(f: Forward, look: SocketLook): Promise<void> {
    await look.settle();
    this.resume(f); // still suspended when SSH dropped again meanwhile
  }

  /** A static, runtime or unix forward shows what keeps it from serving now, if anything (SSH; UDP: the link). */
  private resume(f: Forward): void {
    f.suspended = this.explicitSuspension(f.proto);
    this.refresh(f);
  }

  private explicitSuspension(proto: Proto): Forward['suspended'] {
    return this.sshDown ?? (proto === 'udp' ? this.linkDown : null);
  }

  /**
   * The port the guest's sshd serves this connection on (from $SSH_CONNECTION): that listener is never forwarded.
   * Detected listeners on the old and the new port are matched against the rules again.
   */
  async setSshPort(port: number): Promise<void> {
    const old = this.sshPort;
    if (port === old) return;
    this.sshPort = port;
    this.log.info({ sshPort: port, was: old }, `guest sshd serves port ${port} (not ${old}); it is never forwarded`);
    const affected = [...this.guestListeners.values()].filter(
      (l) => l.proto === 'tcp' && (l.port === old || l.port === port),
    );
    for (const l of affected) {
      const f = this.forwardsById.get(listenerId(l));
      if (f?.source === 'detected') this.drop(f);
    }
    await Promise.all(affected.map((l) => this.upsertDetected(l)));
  }

  async add(spec: ForwardSpec): Promise<ForwardView> {
    const id = this.specId(spec);
    this.adding.add(id);
    try {
      return await this.make(id, spec);
    } finally {
      this.adding.delete(id);
    }
  }

  /** The id `add` gives the forward of `spec`. */
  private specId(spec: ForwardSpec): string {
    if (spec.proto === 'unix') return this.unixIdFor(spec.guestSocket, expandHome(spec.hostSocket));
    return this.explicitIdFor(spec.proto, spec.guestIP ?? '127.0.0.1', spec.guestPort, spec.hostPort, spec.hostIP);
  }

  private async make(id: string, spec: ForwardSpec): Promise<ForwardView> {
    if (spec.proto === 'unix') {
      const hostSocket = expandHome(spec.hostSocket);
      const own = this.ownHostSocket(hostSocket);
      if (own) throw new ForwardRefusedError(own);
      this.refuseDuplicate(id);
      const holder = this.unixHolder(hostSocket);
      if (holder)
        throw new DuplicateForwardError(this.instance, holder.id, holder.source, `host socket ${spec.hostSocket}`);
      await this.createUnixForward(id, 'runtime', spec.guestSocket, hostSocket);
      return this.keepIfBound(id);
    }
    if (takesSshPort(spec.proto, this.hostIPs(spec.hostIP), spec.hostPort, this.opts.hostSshPort))
      throw new ForwardRefusedError(
        `${sshPortTaken(spec.hostPort)}: forward guest port ${spec.guestPort} to another host port`,
      );
    const guestIP = spec.guestIP ?? '127.0.0.1';
    this.refuseDuplicate(id);
    // Another added or static forward on the same host address, or one that overlaps it (0.0.0.0 and 127.0.0.1): two
    // explicit claims, as `ssh -L` twice would be.
    const keys = this.hostIPs(spec.hostIP).map((ip) => bindingKey(spec.proto, formatAddr(ip, spec.hostPort)));
    for (const key of keys) {
      for (const holder of this.explicitForwards) {
        const theirs = holder.bindingKeys.find((k) => keysOverlap(k, key));
        if (theirs) throw new DuplicateForwardError(this.instance, holder.id, holder.source, clash(key, theirs));
      }
    }
    const existing = this.forwardsById.get(id);
    // A detected forward of the same guest and host port gives way to the explicit one, which goes on counting.
    if (existing) this.dropToRemake(existing);
    // Detected forwards on addresses that overlap the new ones (127.0.0.1:P under an added 0.0.0.0:P) let go of
    // them first, as the explicit forward wins; they come back below, folded into it or waiting for the port. So do
    // those of this guest port that `forward rm` had ignored, when the add asks for the host port they had: that is
    // asking for them again (another host port, `forward add 9107:8107`, leaves the removed one removed).
    const displaced = [
      ...new Set([
        ...keys.flatMap((k) => this.bindings.overlapping(k)).filter((f) => f.source === 'detected'),
        ...this.forgetRemoved(spec.proto, spec.guestPort, spec.hostPort),
      ]),
    ];
    for (const f of displaced) this.dropToRemake(f, false);
    this.caps.forget(id);
    const { proto, guestPort, hostPort } = spec;
    const created = this.createPortForward({
      source: 'runtime',
      id,
      proto,
      guestIP,
      guestPort,
      hostIPs: this.hostIPs(spec.hostIP),
      hostPort,
    });
    await Promise.all([created, this.foldDetected(this.forwardsById.get(id))]);
    // The listener of a detected forward it replaced under the same id shows on it (its process, its address).
    const back = [...(existing ? [existing] : []), ...displaced]
      .map((f) => this.guestListeners.get(f.id))
      .filter((l): l is Listener => !!l);
    await Promise.all(back.map((l) => this.upsertDetected(l)));
    this.forgetKept([...displaced, ...(existing ? [existing] : [])]);
    // A displaced listener now served by the explicit forward alone left its slot free.
    if (displaced.length > 0) this.admitCapped('forwarded');
    return this.keepIfBound(id);
  }

  /**
   * A forward the operator just added that could bind no host address at all (privileges, an address this host does
   * not have) is taken back, and the request fails with why, as `ssh -L` or `docker run -p` would. One in `conflict`
   * stays: it takes the port once it is free; so does a unix forward whose guest socket is not there yet (`error`
   * with why): it forwards once the socket is, as a docker.sock forward added before docker starts should.
   */
  private async keepIfBound(id: string): Promise<ForwardView> {
    const view = this.view(id)!;
    const f = this.forwardsById.get(id);
    const kept = () => {
      this.adding.delete(id);
      if (f?.state) this.announce(f, null);
      return view;
    };
    if (view.state !== 'error' && view.state !== 'privileged') return kept();
    if (this.bindings.of(f?.bindingKeys ?? []).some((e) => e.status === 'bound')) return kept();
    await this.remove(id);
    const why =
      view.state === 'privileged'
        ? `cannot listen on ${view.hostAddrs.join(', ')} (EACCES): ports below 1024 need privileges on this host; ` +
          `pick a host port of 1024 or more${privilegedExample(view)}`
        : view.error?.replaceAll(RETRYING, '');
    throw new ForwardRefusedError(`forward ${id} not added: ${why}`);
  }

  /**
   * Lifts what `forward rm` said of a guest port (`proto`, `port`): its listeners follow the rules again. Returns the
   * detected forwards it had ignored, still there, for the caller to drop and make anew.
   */
  private forgetRemoved(proto: Proto, port: number, hostPort: number): Forward[] {
    const key = portKey(proto, port);
    const ofPort = (id: string) => id.startsWith(`${proto}/`) && portOfAddr(id.slice(proto.length + 1)) === port;
    // The host port the rules give this guest port's listeners (its own, unless a range maps it elsewhere).
    const listeners = [...this.guestListeners.values()].filter((l) => l.proto === proto && l.port === port);
    const ruled = listeners.map((l) => this.ruleDecision(l)).find((d) => d.action === 'forward');
    if (hostPort !== (ruled?.action === 'forward' ? ruled.hostPort : port)) return [];
    if (!this.userIgnoredPorts.delete(key)) return [];
    const ids = [...this.userIgnored].filter(ofPort);
    for (const id of ids) this.userIgnored.delete(id);
    return [...this.forwardsById.values()].filter(
      (f) => f.source === 'detected' && f.proto === proto && f.guestPort === port && f.ignored?.cause === 'removed',
    );
  }

  /** Runtime and static forwards are removed; detected ones stay `ignored` while the agent runs (across restarts). */
  async remove(id: string): Promise<void> {
    const f = this.forwardsById.get(id);
    if (!f) throw new Error(`no forward with id ${id}`);
    if (f.source !== 'detected') {
      const foldedIds = [...this.folded].filter(([, holder]) => holder === f).map(([lid]) => lid);
      const remade: Forward[] = [];
      const heldKeys = f.bindingKeys;
      this.drop(f);
      // An explicit forward may have replaced or covered detected ones of its guest port: those are forwarded again,
      // on all their addresses (one it covered in part kept the others, and is made anew).
      for (const lid of foldedIds) {
        const partial = this.forwardsById.get(lid);
        if (partial?.source === 'detected') {
          this.dropToRemake(partial);
          remade.push(partial);
        }
      }
      const again = [...this.guestListeners.entries()].filter(
        ([lid, l]) => l.proto === f.proto && l.port === f.guestPort && !this.forwardsById.has(lid),
      );
      // A static forward is also the rule its guest port is detected by: forwarded again, its listener would take
      // back the very host addresses the operator asked to stop. It is ignored instead, as a detected forward that
      // is removed (until tether down, or a forward add of its port). A runtime forward's removal undoes its add.
      if (f.source === 'static') {
        for (const [lid, l] of again) if (this.landsOn(l, heldKeys)) this.ignoreRemoved(lid, l.proto, l.port);
      }
      if (!this.stopped) await Promise.all(again.map(([, l]) => this.upsertDetected(l)));
      this.forgetKept(remade);
      return;
    }
    if (f.ignored) return; // ignored already (a rule, the guest's sshd, an earlier rm): its reason stays
    this.ignoreRemoved(id, f.proto, f.guestPort);
    this.release(f);
    f.hostAddrs = []; // it holds none now, as forwards ignored by a rule
    this.caps.ignoredNow();
    this.admitCapped('forwarded');
    f.ignored = { cause: 'removed', text: `${REMOVED} (tether forward rm)` };
    this.refresh(f);
  }

  /** What `forward rm` says of a detected listener: it and its guest port stay ignored while the agent runs. */
  private ignoreRemoved(id: string, proto: Proto, port: number): void {
    this.userIgnored.add(id);
    this.userIgnoredPorts.add(portKey(proto, port));
  }

  /** Whether the rules forward listener `l` onto a host address among `keys` (binding keys). */
  private landsOn(l: Listener, keys: readonly string[]): boolean {
    const decision = this.decide(l);
    if (decision.action !== 'forward') return false;
    return decision.hostIPs.some((ip) => {
      const key = bindingKey(l.proto, formatAddr(ip, decision.hostPort));
      return keys.some((k) => keysOverlap(k, key));
    });
  }

  /** What becomes of a guest listener: what `forward rm` said of it, else the first rule that matches. */
  private decide(l: Listener): Decision {
    if (this.userIgnored.has(listenerId(l)) || this.userIgnoredPorts.has(portKey(l.proto, l.port)))
      return { action: 'ignore', why: { cause: 'removed', text: REMOVED } };
    const decision = this.ruleDecision(l);
    return decision.action === 'ignore'
      ? { action: 'ignore', why: { cause: 'rule', text: decision.reason } }
      : decision;
  }

  /** The first rule that matches a guest listener, whatever `forward rm` said of it. */
  private ruleDecision(l: Listener): RuleDecision {
    return matchRule(l, this.opts.portForwards, {
      sshPort: this.sshPort,
      hostSshPort: this.opts.hostSshPort,
      loopbacks: this.loopbacks,
      instance: this.instance,
    });
  }

  private viewOf(f: Forward): ForwardView {
    return toView(f, this.servedAddrs(f));
  }

  /**
   * The forward's host addresses that lead to it. Two guest listeners of one port, on 127.0.0.1 and on ::1, share
   * the host bindings of that port, and each binding serves the listener of its own family: each row shows the
   * address that reaches it, not both.
   */
  private servedAddrs(f: Forward): readonly string[] {
    // Ignored: nothing listens for it (one left out for privileges names its host addresses in its reason).
    if (f.state === 'ignored') return [];
    if (f.hostAddrs.length < 2 || f.proto === 'unix') return f.hostAddrs;
    const entries = this.bindings.of(f.bindingKeys);
    const elsewhere = (addr: string) => {
      const e = entries.find((x) => x.binding.address === addr);
      const served = e?.status === 'bound' ? this.bindings.servedBy(e) : undefined;
      return served !== undefined && served !== f && served.guestPort === f.guestPort;
    };
    const shown = f.hostAddrs.filter((a) => !elsewhere(a));
    return shown.length > 0 ? shown : f.hostAddrs;
  }

  views(): ForwardView[] {
    const out: ForwardView[] = [];
    for (const f of this.forwardsById.values()) if (f.state) out.push(this.viewOf(f));
    return out.sort(compareForwards);
  }

  view(id: string): ForwardView | undefined {
    const f = this.forwardsById.get(id);
    return f?.state ? this.viewOf(f) : undefined;
  }

  /** Guest listeners not forwarded (or listed) because of the caps, right now. */
  get capped(): number {
    return this.caps.capped;
  }

  /** Closes every host listener; each forward that served or waited for its port says so (`reason`: why). */
  async stop(reason = 'the forward engine stopped'): Promise<void> {
    this.stopped = true;
    this.udp.stop();
    this.churn.stop();
    this.opens.clear(reason);
    const closed = [...this.forwardsById.values()].filter((f) => f.state !== null && f.state !== 'ignored');
    for (const f of closed.slice(0, CLOSED_LINES)) {
      const host = this.servedAddrs(f);
      this.log.info(
        { forward: f.id, state: 'removed', guest: f.guestAddr, host, reason },
        `forward ${f.id} closed (guest ${f.guestAddr} → host ${host.join(', ') || 'none'}): ${reason}`,
      );
    }
    if (closed.length > CLOSED_LINES)
      this.log.info(
        { closed: closed.length - CLOSED_LINES, reason },
        `${closed.length - CLOSED_LINES} more forwards closed`,
      );
    const closing = this.bindings.stop();
    for (const f of this.forwardsById.values()) f.look?.stop();
    this.forwardsById.clear();
    this.explicitForwards.clear();
    this.caps.reset();
    await closing;
  }

  // ── forwards: from listeners, rules and the operator ──────────────────────────────────────────────────────────

  /** A detected forward of this kind went: the first capped listener still there that needs its slot takes it. */
  private admitCapped(kind: CapKind): void {
    for (const id of this.caps.takeWaiting(kind)) {
      const l = this.guestListeners.get(id);
      if (!l || this.stopped || this.forwardsById.has(id)) continue;
      const before = this.caps.total;
      void this.upsertDetected(l);
      if (this.caps.total > before) return;
    }
  }

  /** A guest listener's process now shows on `f` (null: its listener went); watchers of `forward ls` see it. */
  private setProcess(f: Forward, process: Forward['process']): void {
    if (f.process?.pid === process?.pid && f.process?.command === process?.command) return;
    // Another process on the same address (a server restarted, the guest rebooted): a new listener since now.
    if (f.process && process && f.process.pid !== process.pid) f.since = new Date();
    f.process = process;
    this.emitView(f);
  }

  /** A folded listener went: its explicit forward no longer shows its process. */
  private unfold(id: string): void {
    const holder = this.folded.get(id);
    if (!holder) return;
    this.folded.delete(id);
    this.setProcess(holder, null);
  }

  /** An explicit forward to the guest's localhost goes to the loopback its guest port listens on (guest-loopback.ts). */
  private followLoopback(f: Forward): void {
    if (f.source === 'detected' || f.proto === 'unix' || !isLocalhost(f.askedIP)) return;
    const proto = f.proto;
    const ip = loopbackTarget(
      f.askedIP,
      (at) => this.guestListeners.get(listenerId({ proto, ip: at, port: f.guestPort }))?.ip,
    );
    if (ip === f.guestIP) return;
    f.guestIP = ip;
    f.guestAddr = formatAddr(ip, f.guestPort);
    const why = ip === f.askedIP ? 'the address it was given' : 'where its only listener is';
    this.log.info({ forward: f.id, guest: f.guestAddr }, `forward ${f.id} goes to guest ${f.guestAddr}, ${why}`);
    this.emitView(f);
  }

  /**
   * An explicit forward shows the process of the guest listener its connections reach (`forward add 10080:80`: the
   * server on guest port 80), as a detected forward does its own; a listener folded into it already shows there.
   */
  private followProcess(f: Forward): void {
    if (f.source === 'detected' || f.proto === 'unix') return;
    const v4 = isIPv4(unmapIPv4(f.guestIP));
    const reached = [f.guestIP, ...(v4 ? ['0.0.0.0'] : []), '::']
      .map((ip) => this.guestListeners.get(listenerId({ proto: f.proto, ip, port: f.guestPort })))
      .find((l) => l !== undefined);
    const process = reached ? processOf(reached) : null;
    if (process || ![...this.folded.values()].includes(f)) this.setProcess(f, process);
  }

  /** A listener of this guest port came or went: the explicit forwards of the port follow it. */
  private followPort(proto: string, port: number): void {
    for (const f of this.explicitForwards) {
      if (f.proto !== proto || f.guestPort !== port) continue;
      this.followLoopback(f);
      this.followProcess(f);
    }
  }

  /**
   * A static or runtime forward was just made: detected forwards of its guest port on the same host addresses give
   * way, and their listeners fold into it (one row, as when the listener comes after the forward).
   */
  private async foldDetected(explicit: Forward | undefined): Promise<void> {
    if (!explicit) return;
    const keys = new Set(explicit.bindingKeys);
    const again: Promise<void>[] = [];
    const remade: Forward[] = [];
    for (const f of [...this.forwardsById.values()]) {
      if (f.source !== 'detected' || f.proto !== explicit.proto || f.guestPort !== explicit.guestPort) continue;
      if (!f.bindingKeys.some((k) => keys.has(k))) continue;
      this.dropToRemake(f);
      remade.push(f);
      const l = this.guestListeners.get(f.id);
      if (l) again.push(this.upsertDetected(l));
    }
    await Promise.all(again);
    this.forgetKept(remade);
  }

  /** Drops `f` to make it anew under the same id: its open connections and totals stay on the new one. */
  private dropToRemake(f: Forward, admit = true): void {
    this.keptStats.set(f.id, f.stats);
    this.drop(f, admit);
  }

  /** The counters of forwards that were not made anew after all (a listener gone meanwhile) are not kept. */
  private forgetKept(forwards: readonly Forward[]): void {
    for (const f of forwards) this.keptStats.delete(f.id);
  }

  /** Why `hostSocket` cannot be a forward's host socket (one of the instance's own files), or null. */
  private ownHostSocket(hostSocket: string): string | null {
    const own = ownFileAt(this.opts.instanceDir, hostSocket);
    return own && `host socket ${hostSocket} is instance ${this.instance}'s ${own}: pick another path`;
  }

  /** The unix socket forward whose host socket file is `hostSocket`, if any. */
  private unixHolder(hostSocket: string): Forward | undefined {
    return this.bindings.refs(bindingKey('unix', hostSocket)).values().next().value;
  }

  /**
   * explicitId, qualified by the host address when the plain id is already another explicit forward's, or a
   * detected forward's that serves host addresses this one does not take (it keeps them, under its own id).
   */
  private explicitIdFor(proto: string, ip: string, guestPort: number, hostPort: number, hostIP?: string): string {
    const plain = explicitId(proto, ip, guestPort, hostPort);
    const holder = this.forwardsById.get(plain);
    if (!hostIP || !holder) return plain;
    const taken = new Set(this.hostIPs(hostIP).map((h) => formatAddr(h, hostPort)));
    const keeps = holder.source === 'detected' && holder.hostAddrs.some((a) => !taken.has(a));
    return holder.source !== 'detected' || keeps ? explicitId(proto, ip, guestPort, hostPort, hostIP) : plain;
  }

  private refuseDuplicate(id: string): void {
    const f = this.forwardsById.get(id);
    if (f && f.source !== 'detected') throw new DuplicateForwardError(this.instance, id, f.source);
  }

  private upsertDetected(l: Listener): Promise<void> {
    const id = listenerId(l);
    const process = processOf(l);
    this.followPort(l.proto, l.port);
    const existing = this.forwardsById.get(id);
    if (existing) {
      if (process) this.setProcess(existing, process);
      // An explicit forward of the same id (`forward add P:P`) follows SSH, not the listener's comings and goings.
      if (existing.source === 'detected' && existing.suspended) {
        existing.suspended = null;
        this.refresh(existing);
      }
      return Promise.resolve();
    }
    const decision = this.decide(l);
    // A static or runtime forward of this guest port already holds these host addresses (a rule and a static
    // forward mapping the same ports): the listener is that forward's, not a second row for the same sockets. Host
    // addresses it does not hold (`forward add 127.0.0.1:P:P` beside the default [::1]) stay this listener's own.
    let hostIPs = decision.action === 'forward' ? decision.hostIPs : [];
    const explicit = decision.action === 'forward' && this.explicitHolding(l, hostIPs, decision.hostPort);
    if (explicit) {
      this.folded.set(id, explicit.holder);
      if (process) this.setProcess(explicit.holder, process);
      hostIPs = hostIPs.filter((ip) => !explicit.held.includes(ip));
      if (hostIPs.length === 0) return Promise.resolve();
    }
    if (!this.caps.fits(decision.action === 'ignore' ? 'ignored' : 'forwarded', id)) return Promise.resolve();
    return this.createPortForward({
      source: 'detected',
      id,
      proto: l.proto,
      guestIP: l.ip,
      guestPort: l.port,
      hostIPs,
      hostPort: decision.action === 'forward' ? decision.hostPort : 0,
      ignored: decision.action === 'ignore' ? decision.why : null,
      process,
    });
  }

  /**
   * The explicit forward of the listener's guest port bound to one of these host addresses (or to the wildcard over
   * it), and which of them it (or another explicit forward of the port) holds; undefined when none is. One bound more
   * narrowly (127.0.0.1 under a listener's 0.0.0.0) holds nothing: the listener's forward then shows the conflict.
   */
  private explicitHolding(
    l: Listener,
    hostIPs: readonly string[],
    hostPort: number,
  ): { holder: Forward; held: string[] } | undefined {
    let holder: Forward | undefined;
    const held: string[] = [];
    for (const ip of hostIPs) {
      const key = bindingKey(l.proto, formatAddr(ip, hostPort));
      for (const f of this.explicitForwards) {
        if (f.proto !== l.proto || f.guestPort !== l.port || !f.bindingKeys.some((k) => keyCovers(k, key))) continue;
        holder ??= f;
        held.push(ip);
        break;
      }
    }
    return holder && { holder, held };
  }

  /**
   * A channel the guest's sshd refuses as prohibited (AllowTcpForwarding, AllowStreamLocalForwarding,
   * DisableForwarding, PermitOpen, a restricted key) fails every connection alike: the forward shows it as `error`
   * until a channel opens again. Other TCP failures (nothing listening any more) are the connection's own. A unix
   * socket's failures all look alike from here, so the socket is looked at in the guest (socketOpenFailure).
   */
  private channelOpened(f: Forward, err: Error | null): void {
    if (!err) {
      f.look?.opened();
      this.show(f, null);
      return;
    }
    // Removed while the open was under way (its listener went): the refusal is that, not a problem to report.
    if (this.forwardsById.get(f.id) !== f) {
      this.log.debug({ forward: f.id, err: err.message }, `connection to removed forward ${f.id} refused`);
      return;
    }
    warnOpenFailure(this.log, f, err);
    // A detected listener whose guest port refuses a connection has most likely just closed: the guest agent scans
    // now (the delta it sends removes the forward) instead of at its next tick, so the host port stops accepting
    // connections that can only be reset.
    if (f.source === 'detected' && err instanceof ChannelOpenError && err.reason === OPEN_CONNECT_FAILED) {
      this.opts.requestScan?.();
    }
    if (f.look) f.look.failed(err);
    else if (err instanceof ChannelOpenError && err.reason === OPEN_ADMINISTRATIVELY_PROHIBITED) {
      this.show(f, { cause: 'sshd-refuses', text: sshdRefusal(err) });
    }
  }

  /** The forward shows `reason` as why its channels fail (null: they open). */
  private show(f: Forward, reason: Forward['refused']): void {
    if (reason?.cause === f.refused?.cause && reason?.text === f.refused?.text) return;
    f.refused = reason;
    this.refresh(f);
  }

  /**
   * A unix forward's host socket is closed while nothing could serve a client: its guest service is down, or SSH is
   * (see unix.ts). Open otherwise.
   */
  private followService(f: Forward): void {
    const closed = f.suspended !== null || f.refused?.cause === 'service-down';
    for (const e of this.bindings.of(f.bindingKeys)) {
      if (e.status === 'bound' && e.binding instanceof UnixBinding) void e.binding.accepting(!closed);
    }
  }

  private newForward(init: Omit<ForwardInit, 'suspended' | 'opened'>): Forward {
    const suspended = init.source === 'detected' ? null : this.explicitSuspension(init.proto);
    return newForward({ ...init, suspended, opened: (f, err) => this.channelOpened(f, err) });
  }

  private createPortForward(spec: PortForwardSpec): Promise<void> {
    const { source, id, proto, guestIP, guestPort, hostIPs, hostPort, ignored = null, process = null } = spec;
    const guestAddr = formatAddr(guestIP, guestPort);
    const f = this.newForward({ id, proto, source, guestAddr, guestIP, guestPort });
    f.stats = this.keptStats.get(id) ?? f.stats;
    this.keptStats.delete(id);
    f.process = process;
    f.ignored = ignored;
    f.hostAddrs = hostIPs.map((ip) => formatAddr(ip, hostPort));
    this.forwardsById.set(id, f);
    if (source !== 'detected') {
      this.explicitForwards.add(f);
      this.followLoopback(f);
      this.followProcess(f);
    }
    if (source === 'detected') this.caps.added(ignored ? 'ignored' : 'forwarded');
    if (ignored) {
      this.refresh(f);
      return Promise.resolve();
    }
    const settled = hostIPs.map((ip) =>
      this.acquire(f, bindingKey(proto, formatAddr(ip, hostPort)), (route) =>
        proto === 'tcp'
          ? new TcpBinding(ip, hostPort, route, { ssh: this.opts.ssh, opens: this.opens, log: this.log })
          : new UdpBinding(ip, hostPort, route, this.udp, this.log),
      ),
    );
    // Forwards of the same host addresses (the guest's 127.0.0.1 and ::1 listeners of one port) may now show fewer.
    for (const g of this.sharing(f)) this.emitView(g);
    return Promise.all(settled).then(() => undefined);
  }

  /** The other forwards that use one of `f`'s host bindings. */
  private sharing(f: Forward): Forward[] {
    const out = new Set<Forward>();
    for (const key of f.bindingKeys) for (const g of this.bindings.refs(key)) if (g !== f) out.add(g);
    return [...out];
  }

  /** Tells listeners of a change of the forward's view that is no change of its state. */
  private emitView(f: Forward): void {
    if (this.forwardsById.get(f.id) === f && f.state) this.emit('change', this.viewOf(f));
  }

  /**
   * The id of a forward of `guestSocket` to `hostSocket`: the plain one, or one qualified with the host path when
   * another forward of the same guest socket has the plain one (docker.sock in two places).
   */
  private unixIdFor(guestSocket: string, hostSocket: string): string {
    const plain = this.forwardsById.get(unixId(guestSocket));
    return plain && plain.hostAddrs[0] !== hostSocket ? unixId(guestSocket, hostSocket) : unixId(guestSocket);
  }

  private async createUnixForward(
    id: string,
    source: ForwardSource,
    guestSocket: string,
    hostSocket: string,
  ): Promise<void> {
    const f = this.newForward({ id, proto: 'unix', source, guestAddr: guestSocket, guestIP: '', guestPort: 0 });
    const look = new SocketLook(f, {
      ssh: this.opts.ssh,
      log: this.log,
      show: (reason) => this.show(f, reason),
      watched: () => this.socketsWatched,
    });
    f.look = look;
    f.hostAddrs = [hostSocket];
    this.forwardsById.set(id, f);
    this.watchSockets();
    // One host socket file serves one guest socket: a second forward there would send its clients to the first's.
    const holder = this.unixHolder(hostSocket);
    if (holder) {
      f.refused = {
        cause: 'host-socket-taken',
        text:
          `host socket ${hostSocket} already serves forward ${holder.id}; give this one its own hostSocket ` +
          '(the default is <instance dir>/<basename of guestSocket>)',
      };
      this.log.error({ forward: id, hostSocket }, `forward ${id} not set up: ${f.refused.text}`);
      this.refresh(f);
      return;
    }
    await this.acquire(
      f,
      bindingKey('unix', hostSocket),
      () => new UnixBinding(hostSocket, guestSocket, f, { ssh: this.opts.ssh, log: this.log }),
    );
    await look.settle();
    this.refresh(f);
  }

  /** `admit`: a capped listener may take the freed slot now (not while the dropped one is about to come back). */
  private drop(f: Forward, admit = true): void {
    if (this.forwardsById.get(f.id) !== f) return;
    this.forwardsById.delete(f.id);
    this.explicitForwards.delete(f);
    if (f.source !== 'detected') this.refreshReached(f);
    if (f.look) {
      f.look.stop();
      this.watchSockets();
    }
    if (f.source === 'detected') {
      const kind = f.ignored ? 'ignored' : 'forwarded';
      this.caps.removed(kind);
      if (admit) this.admitCapped(kind);
    } else {
      for (const [id, holder] of this.folded) if (holder === f) this.folded.delete(id);
    }
    const siblings = this.sharing(f);
    const host = this.servedAddrs(f); // before the release: a sibling on the same port keeps the other address
    this.release(f);
    for (const g of siblings) this.emitView(g);
    if (this.adding.has(f.id)) return;
    if (this.churn.allow(f.id)) {
      this.log.info(
        { forward: f.id, state: 'removed', guest: f.guestAddr, host },
        `forward ${f.id} removed (guest ${f.guestAddr} → host ${host.join(', ') || 'none'})`,
      );
    }
    this.emit('removed', f.id);
  }

  // ── host bindings ─────────────────────────────────────────────────────────────────────────────────────────────

  /** `f` uses the host binding at `key` (see HostBindings.acquire). */
  private acquire(f: Forward, key: string, make: (route: Route) => HostBinding): Promise<void> {
    f.bindingKeys.push(key);
    return this.bindings.acquire(f, key, make);
  }

  private release(f: Forward): void {
    this.bindings.release(f, f.bindingKeys);
    f.bindingKeys = [];
  }

  // ── states ────────────────────────────────────────────────────────────────────────────────────────────────────

  private refresh(f: Forward): void {
    if (this.forwardsById.get(f.id) !== f) return;
    if (f.look) this.followService(f);
    const next = forwardState(f, this.bindings, this.reachedBy(f));
    const cause = next?.cause ?? null;
    if (!next || (next.state === f.state && next.error === f.error && cause === f.cause)) return;
    const previous = f.state;
    f.state = next.state;
    f.error = next.error;
    f.cause = cause;
    // The error names the holder: a new holder is a new error, so it needs no comparison of its own.
    f.heldBy = next.heldBy ?? null;
    f.since = new Date();
    if (!this.adding.has(f.id)) this.announce(f, previous);
  }

  /** Logs the forward's state (once per state: see the levels below) and emits it. */
  private announce(f: Forward, previous: ForwardState | null): void {
    const host = this.servedAddrs(f);
    const fields = { forward: f.id, state: f.state, guest: f.guestAddr, host, error: f.error };
    const msg = `forward ${f.proto} guest ${f.guestAddr} → host ${host.join(', ') || 'none'}: ${f.state}${
      f.error ? ` (${f.error})` : ''
    }`;
    // A state is logged once; a new detail of the same state (a conflict's other address family bound meanwhile) is
    // debug, except for `error`, whose new detail is a new diagnosis.
    if (f.state === previous && f.state !== 'error') this.log.debug(fields, msg);
    else if (!this.churn.allow(f.id)) this.log.debug(fields, msg);
    else if (f.state === 'forwarding' && !f.error) this.log.info(fields, msg);
    else if (f.state === 'ignored' || f.state === 'suspended' || isGuestServiceBelow1024(f)) this.log.info(fields, msg);
    else this.log.warn(fields, msg);
    this.emit('change', this.viewOf(f));
    if (f.source !== 'detected') this.refreshReached(f);
  }

  /**
   * The explicit forward through which a detected forward's guest port is reached from another host port, if any:
   * one to the listener's own guest address first.
   */
  private reachedBy(f: Forward): Forward | undefined {
    if (f.source !== 'detected') return undefined;
    let any: Forward | undefined;
    for (const e of this.explicitForwards) {
      if (e.proto !== f.proto || e.guestPort !== f.guestPort || !e.state || e.state === 'privileged') continue;
      if (e.guestIP === f.guestIP) return e;
      any ??= e;
    }
    return any;
  }

  /** An explicit forward came, went or changed state: the detected forwards of its guest port show it (reachedBy). */
  private refreshReached(explicit: Forward): void {
    for (const f of this.forwardsById.values()) {
      if (f.source === 'detected' && f.proto === explicit.proto && f.guestPort === explicit.guestPort) this.refresh(f);
    }
  }
}
