// The operator's forwards: static port rules of tether.yaml, `forward add` and `forward rm`. Owns their ids, the
// refusal of one that repeats or overlaps another explicit forward or takes the VM's SSH port, how detected forwards
// of the same guest port give way to one and come back when it goes, and an add taken back when it could bind
// nothing. Unix socket forwards are set up by unix-forwards.ts; detected ones by detected.ts.
import type { Listener } from '@tether/protocol';
import { formatAddr, ipOfAddr, portOfAddr, sshPortTaken, takesSshPort } from '../address.js';
import { expandHome } from '../config/paths.js';
import type { PortRule } from '../config/schema.js';
import type { ForwardSpec, ForwardView } from '../model.js';
import type { DetectedForwards } from './detected.js';
import { DuplicateForwardError, ForwardRefusedError } from './errors.js';
import type { Folding } from './folding.js';
import type { Forward } from './forward.js';
import { bindingKey, type HostBindings, keysOverlap, RETRYING } from './host-bindings.js';
import { explicitId } from './ids.js';
import type { ForwardLifecycle, PortForwardSpec } from './lifecycle.js';
import { unprivilegedSpec } from './privileged.js';
import type { ForwardTable } from './table.js';
import type { UnixForwards } from './unix-forwards.js';
import type { ForwardViews } from './views.js';

interface ExplicitDeps {
  /** The instance's name, for the commands that messages suggest. */
  instance: string;
  /** The host's loopback port of the SSH connection to the VM, when it goes over loopback: never forwarded onto. */
  hostSshPort?: number;
  /** Host addresses of a rule or forward that names `hostIP` or none (rules.ts hostIPsOf). */
  hostIPs: (hostIP: string | undefined) => string[];
  table: Pick<ForwardTable, 'get' | 'has' | 'explicit'>;
  bindings: Pick<HostBindings<Forward>, 'overlapping' | 'of'>;
  lifecycle: Pick<ForwardLifecycle, 'createPort' | 'drop' | 'remake' | 'forgetKept'>;
  views: Pick<ForwardViews, 'view' | 'mute' | 'unmute' | 'kept'>;
  detected: Pick<
    DetectedForwards,
    | 'upsert'
    | 'listener'
    | 'listenersOf'
    | 'forgetRemoved'
    | 'forgetCapped'
    | 'admitCapped'
    | 'refold'
    | 'landsOn'
    | 'ignoreRemoved'
    | 'removeByOperator'
  >;
  folding: Pick<Folding, 'foldedInto'>;
  unix: Pick<UnixForwards, 'idFor' | 'refuseOwn' | 'refuseShared' | 'create'>;
  /** Whether the engine stopped: no forward is made any more. */
  stopped: () => boolean;
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

export class ExplicitForwards {
  constructor(private readonly deps: ExplicitDeps) {}

  /** The forward a static TCP rule (`static: true`) makes. */
  staticSpec(rule: PortRule): PortForwardSpec {
    const guestPort = rule.guestPort!;
    const hostPort = rule.hostPort ?? rule.hostPortRange?.[0] ?? guestPort;
    const id = this.idFor('tcp', rule.guestIP, guestPort, hostPort, rule.hostIP);
    const hostIPs = this.deps.hostIPs(rule.hostIP);
    return { source: 'static', id, proto: 'tcp', guestIP: rule.guestIP, guestPort, hostIPs, hostPort };
  }

  async add(spec: ForwardSpec): Promise<ForwardView> {
    const id = this.specId(spec);
    this.deps.views.mute(id);
    try {
      if (spec.proto === 'unix') await this.addUnix(id, spec);
      else await this.make(id, spec);
      return await this.keepIfBound(id);
    } finally {
      this.deps.views.unmute(id);
    }
  }

  /** Runtime and static forwards are removed; detected ones stay `ignored` while the agent runs (across restarts). */
  async remove(id: string): Promise<void> {
    const { table, lifecycle, detected } = this.deps;
    const f = table.get(id);
    if (!f) throw new Error(`no forward with id ${id}`);
    if (f.source === 'detected') {
      detected.removeByOperator(f);
      return;
    }
    const foldedIds = this.deps.folding.foldedInto(f);
    const remade: Forward[] = [];
    const heldKeys = f.bindingKeys;
    lifecycle.drop(f);
    // An explicit forward may have replaced or covered detected ones of its guest port: those are forwarded again,
    // on all their addresses (one it covered in part kept the others, and is made anew).
    for (const lid of foldedIds) {
      const partial = table.get(lid);
      if (partial?.source === 'detected') {
        lifecycle.remake(partial);
        remade.push(partial);
      }
    }
    const again = detected.listenersOf(f.proto, f.guestPort).filter(([lid]) => !table.has(lid));
    // A static forward is also the rule its guest port is detected by: forwarded again, its listener would take
    // back the very host addresses the operator asked to stop. It is ignored instead, as a detected forward that
    // is removed (until tether down, or a forward add of its port). A runtime forward's removal undoes its add.
    if (f.source === 'static') {
      for (const [lid, l] of again) if (detected.landsOn(l, heldKeys)) detected.ignoreRemoved(lid, l.proto, l.port);
    }
    if (!this.deps.stopped()) await Promise.all(again.map(([, l]) => detected.upsert(l)));
    lifecycle.forgetKept(remade);
  }

  /**
   * explicitId, qualified by the host address when the plain id is already another explicit forward's, or a
   * detected forward's that serves host addresses this one does not take (it keeps them, under its own id).
   */
  private idFor(proto: string, ip: string, guestPort: number, hostPort: number, hostIP?: string): string {
    const plain = explicitId(proto, ip, guestPort, hostPort);
    const holder = this.deps.table.get(plain);
    if (!hostIP || !holder) return plain;
    const taken = new Set(this.deps.hostIPs(hostIP).map((h) => formatAddr(h, hostPort)));
    const keeps = holder.source === 'detected' && holder.hostAddrs.some((a) => !taken.has(a));
    return holder.source !== 'detected' || keeps ? explicitId(proto, ip, guestPort, hostPort, hostIP) : plain;
  }

  /** The id `add` gives the forward of `spec`. */
  private specId(spec: ForwardSpec): string {
    if (spec.proto === 'unix') return this.deps.unix.idFor(spec.guestSocket, expandHome(spec.hostSocket));
    return this.idFor(spec.proto, spec.guestIP ?? '127.0.0.1', spec.guestPort, spec.hostPort, spec.hostIP);
  }

  private refuseDuplicate(id: string): void {
    const f = this.deps.table.get(id);
    if (f && f.source !== 'detected') throw new DuplicateForwardError(this.deps.instance, id, f.source);
  }

  private async addUnix(id: string, spec: Extract<ForwardSpec, { proto: 'unix' }>): Promise<void> {
    const { unix } = this.deps;
    const hostSocket = expandHome(spec.hostSocket);
    unix.refuseOwn(hostSocket);
    this.refuseDuplicate(id);
    unix.refuseShared(hostSocket, spec.hostSocket);
    await unix.create(id, 'runtime', spec.guestSocket, hostSocket);
  }

  private async make(id: string, spec: Exclude<ForwardSpec, { proto: 'unix' }>): Promise<void> {
    const { table, lifecycle, detected } = this.deps;
    const hostIPs = this.deps.hostIPs(spec.hostIP);
    if (takesSshPort(spec.proto, hostIPs, spec.hostPort, this.deps.hostSshPort))
      throw new ForwardRefusedError(
        `${sshPortTaken(spec.hostPort)}: forward guest port ${spec.guestPort} to another host port`,
      );
    const guestIP = spec.guestIP ?? '127.0.0.1';
    this.refuseDuplicate(id);
    // Another added or static forward on the same host address, or one that overlaps it (0.0.0.0 and 127.0.0.1): two
    // explicit claims, as `ssh -L` twice would be.
    const keys = hostIPs.map((ip) => bindingKey(spec.proto, formatAddr(ip, spec.hostPort)));
    for (const key of keys) {
      for (const holder of table.explicit) {
        const theirs = holder.bindingKeys.find((k) => keysOverlap(k, key));
        if (theirs) throw new DuplicateForwardError(this.deps.instance, holder.id, holder.source, clash(key, theirs));
      }
    }
    const existing = table.get(id);
    // A detected forward of the same guest and host port gives way to the explicit one, which goes on counting.
    if (existing) lifecycle.remake(existing);
    // Detected forwards on addresses that overlap the new ones (127.0.0.1:P under an added 0.0.0.0:P) let go of
    // them first, as the explicit forward wins; they come back below, folded into it or waiting for the port. So do
    // those of this guest port that `forward rm` had ignored, when the add asks for the host port they had: that is
    // asking for them again (another host port, `forward add 9107:8107`, leaves the removed one removed).
    const displaced = [
      ...new Set([
        ...keys.flatMap((k) => this.deps.bindings.overlapping(k)).filter((f) => f.source === 'detected'),
        ...detected.forgetRemoved(spec.proto, spec.guestPort, spec.hostPort),
      ]),
    ];
    for (const f of displaced) lifecycle.remake(f, false);
    detected.forgetCapped(id);
    const { proto, guestPort, hostPort } = spec;
    const created = lifecycle.createPort({ source: 'runtime', id, proto, guestIP, guestPort, hostIPs, hostPort });
    await Promise.all([created, detected.refold(table.get(id))]);
    // The listener of a detected forward it replaced under the same id shows on it (its process, its address).
    const replaced = [...(existing ? [existing] : []), ...displaced];
    const back = replaced.map((f) => detected.listener(f.id)).filter((l): l is Listener => !!l);
    await Promise.all(back.map((l) => detected.upsert(l)));
    lifecycle.forgetKept([...displaced, ...(existing ? [existing] : [])]);
    // A displaced listener now served by the explicit forward alone left its slot free.
    if (displaced.length > 0) detected.admitCapped('forwarded');
  }

  /**
   * A forward the operator just added that could bind no host address at all (privileges, an address this host does
   * not have) is taken back, and the request fails with why, as `ssh -L` or `docker run -p` would. One in `conflict`
   * stays: it takes the port once it is free; so does a unix forward whose guest socket is not there yet (`error`
   * with why): it forwards once the socket is, as a docker.sock forward added before docker starts should.
   */
  private async keepIfBound(id: string): Promise<ForwardView> {
    const view = this.deps.views.view(id)!;
    const f = this.deps.table.get(id)!;
    const bound = this.deps.bindings.of(f.bindingKeys).some((e) => e.status === 'bound');
    if ((view.state !== 'error' && view.state !== 'privileged') || bound) {
      this.deps.views.kept(f);
      return view;
    }
    await this.remove(id);
    const why =
      view.state === 'privileged'
        ? `cannot listen on ${view.hostAddrs.join(', ')} (EACCES): ports below 1024 need privileges on this host; ` +
          `pick a host port of 1024 or more${privilegedExample(view)}`
        : view.error?.replaceAll(RETRYING, '');
    throw new ForwardRefusedError(`forward ${id} not added: ${why}`);
  }
}
