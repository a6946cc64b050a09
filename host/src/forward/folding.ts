// How the static and runtime forwards of a guest port show its guest listeners. A listener whose host addresses an
// explicit forward of its port already holds is folded into it (one row, not two for the same sockets); an explicit
// forward shows the process of the listener its connections reach and, when it goes to the guest's localhost, takes
// the loopback that listener is on (guest-loopback.ts).
import { isIPv4 } from 'node:net';
import type { Listener } from '@tether/protocol';
import { formatAddr } from '../address.js';
import type { Logger } from '../log.js';
import { type Forward, processOf } from './forward.js';
import { loopbackTarget } from './guest-loopback.js';
import { bindingKey, keyCovers } from './host-bindings.js';
import { listenerId } from './ids.js';
import { isLocalhost, unmapIPv4 } from './rules.js';
import type { ForwardViews } from './views.js';

interface FoldingDeps {
  log: Logger;
  /** The static and runtime port forwards (ForwardTable.explicit). */
  explicit: ReadonlySet<Forward>;
  /** The guest listener of this id, as last reported. */
  listener: (id: string) => Listener | undefined;
  views: Pick<ForwardViews, 'emitView' | 'setProcess'>;
}

export class Folding {
  /** Guest listeners (by id) that a static or runtime forward of their port serves (holding). */
  private readonly folded = new Map<string, Forward>();

  constructor(private readonly deps: FoldingDeps) {}

  /**
   * The explicit forward of the listener's guest port bound to one of these host addresses (or to the wildcard over
   * it), and which of them it (or another explicit forward of the port) holds; undefined when none is. One bound more
   * narrowly (127.0.0.1 under a listener's 0.0.0.0) holds nothing: the listener's forward then shows the conflict.
   */
  holding(l: Listener, hostIPs: readonly string[], hostPort: number): { holder: Forward; held: string[] } | undefined {
    let holder: Forward | undefined;
    const held: string[] = [];
    for (const ip of hostIPs) {
      const key = bindingKey(l.proto, formatAddr(ip, hostPort));
      for (const f of this.deps.explicit) {
        if (f.proto !== l.proto || f.guestPort !== l.port || !f.bindingKeys.some((k) => keyCovers(k, key))) continue;
        holder ??= f;
        held.push(ip);
        break;
      }
    }
    return holder && { holder, held };
  }

  /** Listener `id` is served by `holder`, which shows its process. */
  fold(id: string, holder: Forward, process: Forward['process']): void {
    this.folded.set(id, holder);
    if (process) this.deps.views.setProcess(holder, process);
  }

  /** A folded listener went: its explicit forward no longer shows its process. */
  unfold(id: string): void {
    const holder = this.folded.get(id);
    if (!holder) return;
    this.folded.delete(id);
    this.deps.views.setProcess(holder, null);
  }

  /** A full snapshot of the guest's listeners: those folded that it no longer has went. */
  unfoldGone(listeners: ReadonlyMap<string, Listener>): void {
    for (const id of [...this.folded.keys()]) if (!listeners.has(id)) this.unfold(id);
  }

  /** The ids of the listeners folded into `holder`. */
  foldedInto(holder: Forward): string[] {
    return [...this.folded].filter(([, f]) => f === holder).map(([id]) => id);
  }

  /** `holder` went: nothing is folded into it any more. */
  forget(holder: Forward): void {
    for (const [id, f] of this.folded) if (f === holder) this.folded.delete(id);
  }

  /** A new snapshot of the guest's listeners: every explicit forward follows it. */
  followAll(): void {
    for (const f of this.deps.explicit) this.follow(f);
  }

  /** A listener of this guest port came or went: the explicit forwards of the port follow it. */
  followPort(proto: string, port: number): void {
    for (const f of this.deps.explicit) if (f.proto === proto && f.guestPort === port) this.follow(f);
  }

  /** An explicit forward shows what the guest listener it reaches is: its loopback, then its process. */
  follow(f: Forward): void {
    this.followLoopback(f);
    this.followProcess(f);
  }

  /** An explicit forward to the guest's localhost goes to the loopback its guest port listens on (guest-loopback.ts). */
  private followLoopback(f: Forward): void {
    if (f.source === 'detected' || f.proto === 'unix' || !isLocalhost(f.askedIP)) return;
    const proto = f.proto;
    const ip = loopbackTarget(
      f.askedIP,
      (at) => this.deps.listener(listenerId({ proto, ip: at, port: f.guestPort }))?.ip,
    );
    if (ip === f.guestIP) return;
    f.guestIP = ip;
    f.guestAddr = formatAddr(ip, f.guestPort);
    const why = ip === f.askedIP ? 'the address it was given' : 'where its only listener is';
    this.deps.log.info({ forward: f.id, guest: f.guestAddr }, `forward ${f.id} goes to guest ${f.guestAddr}, ${why}`);
    this.deps.views.emitView(f);
  }

  /**
   * An explicit forward shows the process of the guest listener its connections reach (`forward add 10080:80`: the
   * server on guest port 80), as a detected forward does its own; a listener folded into it already shows there.
   */
  private followProcess(f: Forward): void {
    if (f.source === 'detected' || f.proto === 'unix') return;
    const v4 = isIPv4(unmapIPv4(f.guestIP));
    const reached = [f.guestIP, ...(v4 ? ['0.0.0.0'] : []), '::']
      .map((ip) => this.deps.listener(listenerId({ proto: f.proto, ip, port: f.guestPort })))
      .find((l) => l !== undefined);
    const process = reached ? processOf(reached) : null;
    if (process || ![...this.folded.values()].includes(f)) this.deps.views.setProcess(f, process);
  }
}
