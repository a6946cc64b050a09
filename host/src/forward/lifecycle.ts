// Making and dropping forwards: a new forward's record (suspended as its kind starts, its channels' outcomes routed
// back), the host bindings a TCP or UDP forward takes, a forward's removal (what it held let go of, the forwards
// sharing its bindings shown again, its `removed` line), and a forward made anew under its id counting on its open
// connections and bytes. Which forwards there should be is decided by detected.ts, explicit.ts and unix-forwards.ts.

import { formatAddr } from '../address.js';
import type { Logger } from '../log.js';
import type { ForwardSource } from '../model.js';
import type { SshSession } from '../ssh/index.js';
import type { HostBinding, Route } from './binding.js';
import { type Forward, type ForwardInit, newForward, type Proto } from './forward.js';
import { bindingKey, type HostBindings } from './host-bindings.js';
import type { OpenGate } from './open-gate.js';
import type { ForwardTable } from './table.js';
import { TcpBinding } from './tcp.js';
import { UdpBinding, type UdpFlows } from './udp.js';
import type { ForwardViews } from './views.js';

/** A TCP or UDP forward to create: detected (from a guest listener), static (a rule) or runtime (`forward add`). */
export interface PortForwardSpec {
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

interface LifecycleDeps {
  ssh: SshSession;
  log: Logger;
  opens: OpenGate;
  udp: UdpFlows;
  table: Pick<ForwardTable, 'add' | 'delete' | 'holds'>;
  bindings: HostBindings<Forward>;
  views: Pick<ForwardViews, 'refresh' | 'emitView' | 'servedAddrs' | 'removed'>;
  /** What a new forward of this kind starts suspended by (suspension.ts). */
  suspended: (source: ForwardSource, proto: Proto) => Forward['suspended'];
  /** The outcome of a channel open of forward `f` (null: it opened). */
  opened: (f: Forward, err: Error | null) => void;
  /** A static or runtime port forward was just made: it follows the guest listener of its port (folding.ts). */
  madeExplicit: (f: Forward) => void;
  /**
   * What else a dropped forward lets go of: its slot under the caps (`admit`: a capped listener may take it now),
   * the listeners folded into it, the look at its guest socket.
   */
  dropped: (f: Forward, admit: boolean) => void;
}

export class ForwardLifecycle {
  /** Counters of forwards dropped to be made anew under the same id (remake): open connections count on. */
  private readonly keptStats = new Map<string, Forward['stats']>();

  constructor(private readonly deps: LifecycleDeps) {}

  /** A new forward's record, not in the table yet. */
  make(init: Omit<ForwardInit, 'suspended' | 'opened'>): Forward {
    const suspended = this.deps.suspended(init.source, init.proto);
    return newForward({ ...init, suspended, opened: this.deps.opened });
  }

  createPort(spec: PortForwardSpec): Promise<void> {
    const { source, id, proto, guestIP, guestPort, hostIPs, hostPort, ignored = null, process = null } = spec;
    const { table, views } = this.deps;
    const guestAddr = formatAddr(guestIP, guestPort);
    const f = this.make({ id, proto, source, guestAddr, guestIP, guestPort });
    f.stats = this.keptStats.get(id) ?? f.stats;
    this.keptStats.delete(id);
    f.process = process;
    f.ignored = ignored;
    f.hostAddrs = hostIPs.map((ip) => formatAddr(ip, hostPort));
    table.add(f);
    if (source !== 'detected') this.deps.madeExplicit(f);
    if (ignored) {
      views.refresh(f);
      return Promise.resolve();
    }
    const { ssh, opens, log, udp } = this.deps;
    const settled = hostIPs.map((ip) =>
      this.acquire(f, bindingKey(proto, formatAddr(ip, hostPort)), (route) =>
        proto === 'tcp'
          ? new TcpBinding(ip, hostPort, route, { ssh, opens, log })
          : new UdpBinding(ip, hostPort, route, udp, log),
      ),
    );
    // Forwards of the same host addresses (the guest's 127.0.0.1 and ::1 listeners of one port) may now show fewer.
    for (const g of this.sharing(f)) views.emitView(g);
    return Promise.all(settled).then(() => undefined);
  }

  /** `admit`: a capped listener may take the freed slot now (not while the dropped one is about to come back). */
  drop(f: Forward, admit = true): void {
    const { table, views } = this.deps;
    if (!table.holds(f)) return;
    table.delete(f);
    this.deps.dropped(f, admit);
    const siblings = this.sharing(f);
    const host = views.servedAddrs(f); // before the release: a sibling on the same port keeps the other address
    this.release(f);
    for (const g of siblings) views.emitView(g);
    views.removed(f, host);
  }

  /** Drops `f` to make it anew under the same id: its open connections and totals stay on the new one. */
  remake(f: Forward, admit = true): void {
    this.keptStats.set(f.id, f.stats);
    this.drop(f, admit);
  }

  /** The counters of forwards that were not made anew after all (a listener gone meanwhile) are not kept. */
  forgetKept(forwards: readonly Forward[]): void {
    for (const f of forwards) this.keptStats.delete(f.id);
  }

  /** `f` uses the host binding at `key` (see HostBindings.acquire). */
  acquire(f: Forward, key: string, make: (route: Route) => HostBinding): Promise<void> {
    f.bindingKeys.push(key);
    return this.deps.bindings.acquire(f, key, make);
  }

  release(f: Forward): void {
    this.deps.bindings.release(f, f.bindingKeys);
    f.bindingKeys = [];
  }

  /** The other forwards that use one of `f`'s host bindings. */
  private sharing(f: Forward): Forward[] {
    const out = new Set<Forward>();
    for (const key of f.bindingKeys) for (const g of this.deps.bindings.refs(key)) if (g !== f) out.add(g);
    return [...out];
  }
}
