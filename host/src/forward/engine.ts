// The forwarding engine: reconciles the desired forwards (guest listeners from the agent link, static rules from
// tether.yaml, runtime adds) into host bindings and keeps each forward's state. The coordinator: it wires the
// concepts together and is what the host agent calls. Detected forwards are reconciled in detected.ts (folded into
// explicit ones in folding.ts), the operator's in explicit.ts, unix socket forwards in unix-forwards.ts; forwards are
// made and dropped in lifecycle.ts and kept in table.ts; suspension.ts follows SSH and the agent link; views.ts works
// out, logs and emits each forward's state. The record is forward.ts; the shared host bindings and their bind retries
// live in host-bindings.ts, and the sockets themselves in tcp.ts, udp.ts and unix.ts.
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import type { Listener, Peer } from '@tether/protocol';
import { isSocketRule, type PortForward, type PortRule } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { ForwardHolder, ForwardSpec, ForwardView } from '../model.js';
import {
  ChannelOpenError,
  OPEN_ADMINISTRATIVELY_PROHIBITED,
  OPEN_CONNECT_FAILED,
  type SshSession,
} from '../ssh/index.js';
import { DetectedForwards } from './detected.js';
import { ExplicitForwards } from './explicit.js';
import { Folding } from './folding.js';
import type { Forward } from './forward.js';
import { HostBindings } from './host-bindings.js';
import { hostLoopbacks } from './host-loopbacks.js';
import { ForwardLifecycle } from './lifecycle.js';
import { sshdRefusal, warnOpenFailure } from './open-failure.js';
import { OpenGate } from './open-gate.js';
import { hostIPsOf } from './rules.js';
import { Suspension } from './suspension.js';
import { ForwardTable } from './table.js';
import { UdpFlows } from './udp.js';
import { UnixForwards } from './unix-forwards.js';
import { ForwardViews } from './views.js';

export { GUEST_LISTENER_FACTOR } from './detected.js';

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

/** Events: `change` (ForwardView), `removed` (id: string). */
export class ForwardEngine extends EventEmitter {
  private readonly log: Logger;
  private readonly table = new ForwardTable();
  private readonly bindings: HostBindings<Forward>;
  private readonly opens: OpenGate;
  private readonly udp: UdpFlows;
  private readonly forwardViews: ForwardViews;
  private readonly suspension: Suspension;
  private readonly lifecycle: ForwardLifecycle;
  private readonly folding: Folding;
  private readonly detected: DetectedForwards;
  private readonly unix: UnixForwards;
  private readonly explicit: ExplicitForwards;
  private stopped = false;
  /** The current agent link (UDP datagrams travel over it). */
  private peer: Peer | null = null;

  constructor(private readonly opts: ForwardEngineOptions) {
    super();
    const log = opts.logger;
    this.log = log;
    // The instance's name (its directory's), for the commands that messages suggest.
    const instance = basename(opts.instanceDir);
    // Where forwards that name no host address listen: the host's loopbacks, read once.
    const loopbacks = opts.loopbacks ?? hostLoopbacks();
    if (!loopbacks.includes('::1'))
      log.info(
        { loopbacks },
        'this host has no IPv6 loopback (::1): forwards that name no host address listen on 127.0.0.1 only',
      );
    const stopped = () => this.stopped;
    const table = this.table;
    this.opens = new OpenGate(opts.channelOpenConcurrency ?? 64);
    this.udp = new UdpFlows({ logger: log, idleMs: opts.udpIdleMs });
    this.bindings = new HostBindings({
      log,
      retryInitialMs: opts.retryInitialMs,
      retryMaxMs: opts.retryMaxMs,
      peerHolder: opts.peerHolder,
      onChange: (f) => this.forwardViews.refresh(f),
    });
    const bindings = this.bindings;
    this.forwardViews = new ForwardViews({
      table,
      bindings,
      log,
      changed: (view) => this.emit('change', view),
      removed: (id) => this.emit('removed', id),
      followService: (f) => this.unix.followService(f),
    });
    const views = this.forwardViews;
    this.suspension = new Suspension({ forwards: () => table.values(), refresh: (f) => views.refresh(f) });
    this.folding = new Folding({ log, explicit: table.explicit, listener: (id) => this.detected.listener(id), views });
    this.lifecycle = new ForwardLifecycle({
      ssh: opts.ssh,
      log,
      opens: this.opens,
      udp: this.udp,
      table,
      bindings,
      views,
      suspended: (source, proto) => this.suspension.of(source, proto),
      opened: (f, err) => this.channelOpened(f, err),
      madeExplicit: (f) => this.folding.follow(f),
      dropped: (f, admit) => this.dropped(f, admit),
    });
    const lifecycle = this.lifecycle;
    this.detected = new DetectedForwards({
      log,
      maxForwards: opts.maxForwards,
      portForwards: opts.portForwards,
      sshPort: opts.sshPort ?? 22,
      hostSshPort: opts.hostSshPort,
      loopbacks,
      instance,
      table,
      lifecycle,
      views,
      folding: this.folding,
      stopped,
    });
    this.unix = new UnixForwards({
      ssh: opts.ssh,
      log,
      instanceDir: opts.instanceDir,
      instance,
      table,
      bindings,
      lifecycle,
      views,
      show: (f, reason) => this.show(f, reason),
      repeats: (index, id) => this.repeats(index, id),
      watchSockets: opts.watchSockets,
    });
    this.explicit = new ExplicitForwards({
      instance,
      hostSshPort: opts.hostSshPort,
      hostIPs: (hostIP) => hostIPsOf(hostIP, loopbacks),
      table,
      bindings,
      lifecycle,
      views,
      detected: this.detected,
      folding: this.folding,
      unix: this.unix,
      stopped,
    });
  }

  // ── what the host agent calls ─────────────────────────────────────────────────────────────────────────────────

  /** Sets up static TCP rules and unix socket forwards; resolves when their first bind attempts settled. */
  async start(): Promise<void> {
    const pending: Promise<void>[] = [];
    const rules = this.opts.portForwards;
    for (const rule of rules.filter((r): r is PortRule => !isSocketRule(r) && !!r.static && !r.ignore)) {
      const spec = this.explicit.staticSpec(rule);
      if (!this.repeats(rules.indexOf(rule), spec.id)) pending.push(this.lifecycle.createPort(spec));
    }
    for (const rule of rules.filter(isSocketRule)) pending.push(this.unix.fromRule(rule, rules.indexOf(rule)));
    await Promise.all(pending);
  }

  /** A static rule (at `index` of portForwards) whose forward an earlier rule already set up: said, and skipped. */
  private repeats(index: number, id: string): boolean {
    if (!this.table.has(id)) return false;
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
    this.suspension.linkUp();
    // Also when the link fails before it is up (its setup timed out): the link reports no `down` for that.
    peer.once('close', (reason: string) => {
      if (this.peer === peer && !this.stopped) this.suspension.udpLinkLost(reason);
    });
  }

  /** A full snapshot of guest listeners: forwards still listening are kept, the others removed. */
  setListeners(listeners: readonly Listener[]): Promise<void> {
    return this.detected.setListeners(listeners);
  }

  applyDelta(delta: { added: readonly Listener[]; removed: readonly Listener[] }): Promise<void> {
    return this.detected.applyDelta(delta);
  }

  /**
   * The agent link is down: detected forwards, and UDP ones whose datagrams its relay carries, keep their host
   * listeners (clients get a quick retry) but say so.
   */
  suspendDetected(reason: string): void {
    this.suspension.linkLost(reason);
  }

  /** The SSH connection went down (a reason) or is back (null): see Suspension.setSshDown. */
  setSshDown(reason: string | null): void {
    this.suspension.setSshDown(reason);
  }

  /** Whether the guest agent watches the unix forwards' socket paths now (UnixForwards.setWatch). */
  setSocketWatch(on: boolean): void {
    this.unix.setWatch(on);
  }

  /** The guest agent saw a watched socket path change: its forwards look at it now. */
  socketChanged(path: string): void {
    this.unix.changed(path);
  }

  /**
   * The port the guest's sshd serves this connection on (from $SSH_CONNECTION): that listener is never forwarded.
   * Detected listeners on the old and the new port are matched against the rules again.
   */
  setSshPort(port: number): Promise<void> {
    return this.detected.setSshPort(port);
  }

  add(spec: ForwardSpec): Promise<ForwardView> {
    return this.explicit.add(spec);
  }

  /** Runtime and static forwards are removed; detected ones stay `ignored` while the agent runs (across restarts). */
  remove(id: string): Promise<void> {
    return this.explicit.remove(id);
  }

  views(): ForwardView[] {
    return this.forwardViews.list();
  }

  view(id: string): ForwardView | undefined {
    return this.forwardViews.view(id);
  }

  /** Guest listeners not forwarded (or listed) because of the caps, right now. */
  get capped(): number {
    return this.detected.capped;
  }

  /** Closes every host listener; each forward that served or waited for its port says so (`reason`: why). */
  async stop(reason = 'the forward engine stopped'): Promise<void> {
    this.stopped = true;
    this.udp.stop();
    this.opens.clear(reason);
    this.forwardViews.stop(reason);
    const closing = this.bindings.stop();
    this.unix.stop();
    this.table.clear();
    this.detected.reset();
    await closing;
  }

  // ── what the concepts share ───────────────────────────────────────────────────────────────────────────────────

  /** What a dropped forward let go of besides its host bindings (ForwardLifecycle.drop). */
  private dropped(f: Forward, admit: boolean): void {
    if (f.source !== 'detected') this.forwardViews.refreshReached(f);
    if (f.look) this.unix.dropped(f);
    if (f.source === 'detected') this.detected.dropped(f, admit);
    else this.folding.forget(f);
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
    if (!this.table.holds(f)) {
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
    this.forwardViews.refresh(f);
  }
}
