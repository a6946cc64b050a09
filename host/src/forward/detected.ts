// Detected forwards: the guest's listeners, as the agent link reports them (full snapshots, then deltas), reconciled
// into forwards. Owns what becomes of each listener: the rules' decision or what `forward rm` said (removed-ports.ts),
// its folding into a static or runtime forward that already holds its host addresses (folding.ts), and the caps on
// how many there are (caps.ts). Remembers the listeners, bounded, so that a detected forward can come back when an
// explicit one goes or a capped slot frees.
import type { Listener } from '@tether/protocol';
import { formatAddr } from '../address.js';
import type { PortForward } from '../config/schema.js';
import type { Logger } from '../log.js';
import { type CapKind, ForwardCaps } from './caps.js';
import type { Folding } from './folding.js';
import { type Forward, type Proto, processOf } from './forward.js';
import { bindingKey, keysOverlap } from './host-bindings.js';
import { listenerId } from './ids.js';
import type { ForwardLifecycle } from './lifecycle.js';
import { RemovedPorts } from './removed-ports.js';
import { matchRule, type RuleDecision } from './rules.js';
import type { ForwardTable } from './table.js';
import type { ForwardViews } from './views.js';

/** Guest listeners the engine remembers, as a multiple of maxForwards (forwarded, ignored and capped ones). */
export const GUEST_LISTENER_FACTOR = 4;

/** What becomes of a guest listener: forwarded as a rule says, or ignored and why. */
type Decision =
  | Extract<RuleDecision, { action: 'forward' }>
  | { action: 'ignore'; why: NonNullable<Forward['ignored']> };

interface DetectedDeps {
  log: Logger;
  maxForwards: number;
  /** The rules (tether.yaml's portForwards) and what they are matched with besides (rules.ts matchRule). */
  portForwards: readonly PortForward[];
  sshPort: number;
  hostSshPort?: number;
  loopbacks: readonly string[];
  instance: string;
  table: Pick<ForwardTable, 'get' | 'has' | 'values'>;
  lifecycle: Pick<ForwardLifecycle, 'createPort' | 'drop' | 'remake' | 'forgetKept' | 'release'>;
  views: Pick<ForwardViews, 'refresh' | 'setProcess'>;
  folding: Folding;
  /** Whether the engine stopped: no forward is made any more. */
  stopped: () => boolean;
}

export class DetectedForwards {
  /** The guest's listeners as last reported, so a detected forward can come back when an explicit one goes. */
  private readonly listeners = new Map<string, Listener>();
  private readonly caps: ForwardCaps;
  private readonly removed = new RemovedPorts();
  /** Guest listeners beyond what the engine keeps (GUEST_LISTENER_FACTOR × maxForwards), since the last snapshot. */
  private overflowed = 0;
  private sshPort: number;

  constructor(private readonly deps: DetectedDeps) {
    this.caps = new ForwardCaps(deps.maxForwards, deps.log);
    this.sshPort = deps.sshPort;
  }

  /** Guest listeners not forwarded (or listed) because of the caps, right now. */
  get capped(): number {
    return this.caps.capped;
  }

  /** The guest listener of this id, as last reported. */
  listener(id: string): Listener | undefined {
    return this.listeners.get(id);
  }

  /** The guest listeners of a port, by id. */
  listenersOf(proto: Proto, port: number): [string, Listener][] {
    return [...this.listeners].filter(([, l]) => l.proto === proto && l.port === port);
  }

  /** A full snapshot of guest listeners: forwards still listening are kept, the others removed. */
  async setListeners(listeners: readonly Listener[]): Promise<void> {
    const desired = new Map<string, Listener>();
    for (const l of listeners) desired.set(listenerId(l), l);
    this.listeners.clear();
    for (const [id, l] of desired) this.listeners.set(id, l);
    this.caps.clearWaiting(); // worked out again below, from this snapshot
    this.overflowed = 0;
    this.deps.folding.unfoldGone(desired);
    for (const f of [...this.deps.table.values()]) {
      if (f.source === 'detected' && !desired.has(f.id)) this.deps.lifecycle.drop(f);
    }
    await Promise.all([...desired.values()].map((l) => this.upsert(l)));
    this.deps.folding.followAll();
  }

  async applyDelta(delta: { added: readonly Listener[]; removed: readonly Listener[] }): Promise<void> {
    const { table, folding } = this.deps;
    // An address whose socket was replaced comes as removed and added in one delta (one socket of an SO_REUSEPORT
    // group closing, a server restarting between two scans): its forward stays, and takes the new owner below,
    // instead of closing its host listener and refusing the clients that come meanwhile.
    const readded = new Set(delta.added.map(listenerId));
    for (const l of delta.removed) {
      const id = listenerId(l);
      if (readded.has(id)) continue;
      this.listeners.delete(id);
      this.caps.forget(id);
      folding.unfold(id);
      const f = table.get(id);
      if (f?.source === 'detected') this.deps.lifecycle.drop(f);
      else if (f) this.deps.views.setProcess(f, null);
      folding.followPort(l.proto, l.port);
    }
    // Deltas can add without end (a hostile or broken guest): past the bound, listeners are not even remembered.
    const limit = this.deps.maxForwards * GUEST_LISTENER_FACTOR;
    const added = delta.added.filter((l) => {
      const id = listenerId(l);
      if (this.listeners.size >= limit && !this.listeners.has(id)) return false;
      this.listeners.set(id, l);
      return true;
    });
    if (added.length < delta.added.length) {
      if (this.overflowed === 0)
        this.deps.log.warn(
          { kept: limit },
          `guest reports more than ${limit} listeners; the rest are not tracked until its next full snapshot`,
        );
      this.overflowed += delta.added.length - added.length;
    }
    await Promise.all(added.map((l) => this.upsert(l)));
  }

  /**
   * The port the guest's sshd serves this connection on (from $SSH_CONNECTION): that listener is never forwarded.
   * Detected listeners on the old and the new port are matched against the rules again.
   */
  async setSshPort(port: number): Promise<void> {
    const old = this.sshPort;
    if (port === old) return;
    this.sshPort = port;
    this.deps.log.info(
      { sshPort: port, was: old },
      `guest sshd serves port ${port} (not ${old}); it is never forwarded`,
    );
    const affected = [...this.listeners.values()].filter(
      (l) => l.proto === 'tcp' && (l.port === old || l.port === port),
    );
    for (const l of affected) {
      const f = this.deps.table.get(listenerId(l));
      if (f?.source === 'detected') this.deps.lifecycle.drop(f);
    }
    await Promise.all(affected.map((l) => this.upsert(l)));
  }

  /** Makes the forward of guest listener `l`, or has the one there is show it. */
  upsert(l: Listener): Promise<void> {
    const { table, views, folding } = this.deps;
    const id = listenerId(l);
    const process = processOf(l);
    folding.followPort(l.proto, l.port);
    const existing = table.get(id);
    if (existing) {
      if (process) views.setProcess(existing, process);
      // An explicit forward of the same id (`forward add P:P`) follows SSH, not the listener's comings and goings.
      if (existing.source === 'detected' && existing.suspended) {
        existing.suspended = null;
        views.refresh(existing);
      }
      return Promise.resolve();
    }
    const decision = this.decide(l);
    // A static or runtime forward of this guest port already holds these host addresses (a rule and a static
    // forward mapping the same ports): the listener is that forward's, not a second row for the same sockets. Host
    // addresses it does not hold (`forward add 127.0.0.1:P:P` beside the default [::1]) stay this listener's own.
    let hostIPs = decision.action === 'forward' ? decision.hostIPs : [];
    const explicit = decision.action === 'forward' && folding.holding(l, hostIPs, decision.hostPort);
    if (explicit) {
      folding.fold(id, explicit.holder, process);
      hostIPs = hostIPs.filter((ip) => !explicit.held.includes(ip));
      if (hostIPs.length === 0) return Promise.resolve();
    }
    const kind = decision.action === 'ignore' ? 'ignored' : 'forwarded';
    if (!this.caps.fits(kind, id)) return Promise.resolve();
    const created = this.deps.lifecycle.createPort({
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
    this.caps.added(kind);
    return created;
  }

  /** A detected forward went: its slot frees, and (`admit`) the first capped listener that needs it takes it. */
  dropped(f: Forward, admit: boolean): void {
    const kind = f.ignored ? 'ignored' : 'forwarded';
    this.caps.removed(kind);
    if (admit) this.admitCapped(kind);
  }

  /** A detected forward of this kind went: the first capped listener still there that needs its slot takes it. */
  admitCapped(kind: CapKind): void {
    for (const id of this.caps.takeWaiting(kind)) {
      const l = this.listeners.get(id);
      if (!l || this.deps.stopped() || this.deps.table.has(id)) continue;
      const before = this.caps.total;
      void this.upsert(l);
      if (this.caps.total > before) return;
    }
  }

  /** Listener `id` waits for no slot any more: an explicit forward serves it. */
  forgetCapped(id: string): void {
    this.caps.forget(id);
  }

  /** The engine stopped: no forwards count. */
  reset(): void {
    this.caps.reset();
  }

  /** `forward rm` of a detected forward: it stays `ignored` while its listener exists, and its port with it. */
  removeByOperator(f: Forward): void {
    if (f.ignored) return; // ignored already (a rule, the guest's sshd, an earlier rm): its reason stays
    this.ignoreRemoved(f.id, f.proto, f.guestPort);
    this.deps.lifecycle.release(f);
    f.hostAddrs = []; // it holds none now, as forwards ignored by a rule
    this.caps.ignoredNow();
    this.admitCapped('forwarded');
    f.ignored = RemovedPorts.now;
    this.deps.views.refresh(f);
  }

  /** What `forward rm` says of a detected listener: it and its guest port stay ignored while the agent runs. */
  ignoreRemoved(id: string, proto: Proto, port: number): void {
    this.removed.add(id, proto, port);
  }

  /**
   * Lifts what `forward rm` said of a guest port (`proto`, `port`) when a forward of it to `hostPort` is added: its
   * listeners follow the rules again. Returns the detected forwards it had ignored, still there, for the caller to
   * drop and make anew.
   */
  forgetRemoved(proto: Proto, port: number, hostPort: number): Forward[] {
    // The host port the rules give this guest port's listeners (its own, unless a range maps it elsewhere).
    const ruled = this.listenersOf(proto, port)
      .map(([, l]) => this.ruleDecision(l))
      .find((d) => d.action === 'forward');
    if (hostPort !== (ruled?.action === 'forward' ? ruled.hostPort : port)) return [];
    if (!this.removed.lift(proto, port)) return [];
    return [...this.deps.table.values()].filter(
      (f) => f.source === 'detected' && f.proto === proto && f.guestPort === port && f.ignored?.cause === 'removed',
    );
  }

  /**
   * A static or runtime forward was just made: detected forwards of its guest port on the same host addresses give
   * way, and their listeners fold into it (one row, as when the listener comes after the forward).
   */
  async refold(explicit: Forward | undefined): Promise<void> {
    if (!explicit) return;
    const { lifecycle } = this.deps;
    const keys = new Set(explicit.bindingKeys);
    const again: Promise<void>[] = [];
    const remade: Forward[] = [];
    for (const f of [...this.deps.table.values()]) {
      if (f.source !== 'detected' || f.proto !== explicit.proto || f.guestPort !== explicit.guestPort) continue;
      if (!f.bindingKeys.some((k) => keys.has(k))) continue;
      lifecycle.remake(f);
      remade.push(f);
      const l = this.listeners.get(f.id);
      if (l) again.push(this.upsert(l));
    }
    await Promise.all(again);
    lifecycle.forgetKept(remade);
  }

  /** Whether the rules forward listener `l` onto a host address among `keys` (binding keys). */
  landsOn(l: Listener, keys: readonly string[]): boolean {
    const decision = this.decide(l);
    if (decision.action !== 'forward') return false;
    return decision.hostIPs.some((ip) => {
      const key = bindingKey(l.proto, formatAddr(ip, decision.hostPort));
      return keys.some((k) => keysOverlap(k, key));
    });
  }

  /** What becomes of a guest listener: what `forward rm` said of it, else the first rule that matches. */
  private decide(l: Listener): Decision {
    const removed = this.removed.reasonFor(l);
    if (removed) return { action: 'ignore', why: removed };
    const decision = this.ruleDecision(l);
    return decision.action === 'ignore'
      ? { action: 'ignore', why: { cause: 'rule', text: decision.reason } }
      : decision;
  }

  /** The first rule that matches a guest listener, whatever `forward rm` said of it. */
  private ruleDecision(l: Listener): RuleDecision {
    return matchRule(l, this.deps.portForwards, {
      sshPort: this.sshPort,
      hostSshPort: this.deps.hostSshPort,
      loopbacks: this.deps.loopbacks,
      instance: this.deps.instance,
    });
  }
}
