// Each forward as operators see it: its state, worked out (state.ts) whenever something it depends on changed, one
// log line per change (the churn log keeps a forward that comes and goes in a loop from flooding it), the `change`
// and `removed` events, and the host addresses each row shows. Decides nothing about the forwards themselves.
import type { Logger } from '../log.js';
import { compareForwards, type ForwardState, type ForwardView, isGuestServiceBelow1024 } from '../model.js';
import { ChurnLog } from './churn-log.js';
import { type Forward, toView } from './forward.js';
import type { HostBindings } from './host-bindings.js';
import { forwardState } from './state.js';
import type { ForwardTable } from './table.js';

/** Forwards named one line each when the engine stops; the rest are counted in one line (up to 4,096 forwards). */
const CLOSED_LINES = 64;

interface ViewsDeps {
  table: Pick<ForwardTable, 'get' | 'holds' | 'values' | 'explicit'>;
  bindings: HostBindings<Forward>;
  log: Logger;
  /** A forward's view changed (the `change` event). */
  changed: (view: ForwardView) => void;
  /** A forward went (the `removed` event). */
  removed: (id: string) => void;
  /** Before a unix forward's state is worked out: its host socket follows whether anything could serve a client. */
  followService: (f: Forward) => void;
}

export class ForwardViews {
  /**
   * Ids of forwards `forward add` is making: their states are neither logged nor emitted until the add keeps them,
   * so one it refuses leaves no `error` and `removed` lines for a forward that never was.
   */
  private readonly muted = new Set<string>();
  private readonly churn: ChurnLog;

  constructor(private readonly deps: ViewsDeps) {
    this.churn = new ChurnLog(deps.log, (id) => {
      const f = deps.table.get(id);
      return f ? `${f.state} (guest ${f.guestAddr} → host ${this.servedAddrs(f).join(', ') || 'none'})` : 'removed';
    });
  }

  /** Forward `id` is being added: its states and its removal are quiet until kept (or until the add ends). */
  mute(id: string): void {
    this.muted.add(id);
  }

  unmute(id: string): void {
    this.muted.delete(id);
  }

  /** The add keeps forward `f`: its state is said from now on, beginning with the one it has. */
  kept(f: Forward): void {
    this.muted.delete(f.id);
    if (f.state) this.announce(f, null);
  }

  /** Works out the forward's state again; a change is logged and emitted. */
  refresh(f: Forward): void {
    if (!this.deps.table.holds(f)) return;
    if (f.look) this.deps.followService(f);
    const next = forwardState(f, this.deps.bindings, this.reachedBy(f));
    const cause = next?.cause ?? null;
    if (!next || (next.state === f.state && next.error === f.error && cause === f.cause)) return;
    const previous = f.state;
    f.state = next.state;
    f.error = next.error;
    f.cause = cause;
    // The error names the holder: a new holder is a new error, so it needs no comparison of its own.
    f.heldBy = next.heldBy ?? null;
    f.since = new Date();
    if (!this.muted.has(f.id)) this.announce(f, previous);
  }

  /** Logs the forward's state (once per state: see the levels below) and emits it. */
  private announce(f: Forward, previous: ForwardState | null): void {
    const host = this.servedAddrs(f);
    const fields = { forward: f.id, state: f.state, guest: f.guestAddr, host, error: f.error };
    const msg = `forward ${f.proto} guest ${f.guestAddr} → host ${host.join(', ') || 'none'}: ${f.state}${
      f.error ? ` (${f.error})` : ''
    }`;
    const log = this.deps.log;
    // A state is logged once; a new detail of the same state (a conflict's other address family bound meanwhile) is
    // debug, except for `error`, whose new detail is a new diagnosis.
    if (f.state === previous && f.state !== 'error') log.debug(fields, msg);
    else if (!this.churn.allow(f.id)) log.debug(fields, msg);
    else if (f.state === 'forwarding' && !f.error) log.info(fields, msg);
    else if (f.state === 'ignored' || f.state === 'suspended' || isGuestServiceBelow1024(f)) log.info(fields, msg);
    else log.warn(fields, msg);
    this.deps.changed(this.viewOf(f));
    if (f.source !== 'detected') this.refreshReached(f);
  }

  /** Tells listeners of a change of the forward's view that is no change of its state. */
  emitView(f: Forward): void {
    if (this.deps.table.holds(f) && f.state) this.deps.changed(this.viewOf(f));
  }

  /** A guest listener's process now shows on `f` (null: its listener went); watchers of `forward ls` see it. */
  setProcess(f: Forward, process: Forward['process']): void {
    if (f.process?.pid === process?.pid && f.process?.command === process?.command) return;
    // Another process on the same address (a server restarted, the guest rebooted): a new listener since now.
    if (f.process && process && f.process.pid !== process.pid) f.since = new Date();
    f.process = process;
    this.emitView(f);
  }

  /** Forward `f` was dropped, serving `host` until then: said once (unless its add is taking it back) and emitted. */
  removed(f: Forward, host: readonly string[]): void {
    if (this.muted.has(f.id)) return;
    if (this.churn.allow(f.id)) {
      this.deps.log.info(
        { forward: f.id, state: 'removed', guest: f.guestAddr, host },
        `forward ${f.id} removed (guest ${f.guestAddr} → host ${host.join(', ') || 'none'})`,
      );
    }
    this.deps.removed(f.id);
  }

  /** The engine stops: each forward that served or waited for its port says so (`reason`: why). */
  stop(reason: string): void {
    this.churn.stop();
    const log = this.deps.log;
    const closed = [...this.deps.table.values()].filter((f) => f.state !== null && f.state !== 'ignored');
    for (const f of closed.slice(0, CLOSED_LINES)) {
      const host = this.servedAddrs(f);
      log.info(
        { forward: f.id, state: 'removed', guest: f.guestAddr, host, reason },
        `forward ${f.id} closed (guest ${f.guestAddr} → host ${host.join(', ') || 'none'}): ${reason}`,
      );
    }
    if (closed.length > CLOSED_LINES)
      log.info(
        { closed: closed.length - CLOSED_LINES, reason },
        `${closed.length - CLOSED_LINES} more forwards closed`,
      );
  }

  list(): ForwardView[] {
    const out: ForwardView[] = [];
    for (const f of this.deps.table.values()) if (f.state) out.push(this.viewOf(f));
    return out.sort(compareForwards);
  }

  view(id: string): ForwardView | undefined {
    const f = this.deps.table.get(id);
    return f?.state ? this.viewOf(f) : undefined;
  }

  private viewOf(f: Forward): ForwardView {
    return toView(f, this.servedAddrs(f));
  }

  /**
   * The forward's host addresses that lead to it. Two guest listeners of one port, on 127.0.0.1 and on ::1, share
   * the host bindings of that port, and each binding serves the listener of its own family: each row shows the
   * address that reaches it, not both.
   */
  servedAddrs(f: Forward): readonly string[] {
    // Ignored: nothing listens for it (one left out for privileges names its host addresses in its reason).
    if (f.state === 'ignored') return [];
    if (f.hostAddrs.length < 2 || f.proto === 'unix') return f.hostAddrs;
    const bindings = this.deps.bindings;
    const entries = bindings.of(f.bindingKeys);
    const elsewhere = (addr: string) => {
      const e = entries.find((x) => x.binding.address === addr);
      const served = e?.status === 'bound' ? bindings.servedBy(e) : undefined;
      return served !== undefined && served !== f && served.guestPort === f.guestPort;
    };
    const shown = f.hostAddrs.filter((a) => !elsewhere(a));
    return shown.length > 0 ? shown : f.hostAddrs;
  }

  /**
   * The explicit forward through which a detected forward's guest port is reached from another host port, if any:
   * one to the listener's own guest address first.
   */
  private reachedBy(f: Forward): Forward | undefined {
    if (f.source !== 'detected') return undefined;
    let any: Forward | undefined;
    for (const e of this.deps.table.explicit) {
      if (e.proto !== f.proto || e.guestPort !== f.guestPort || !e.state || e.state === 'privileged') continue;
      if (e.guestIP === f.guestIP) return e;
      any ??= e;
    }
    return any;
  }

  /** An explicit forward came, went or changed state: the detected forwards of its guest port show it (reachedBy). */
  refreshReached(explicit: Forward): void {
    for (const f of this.deps.table.values()) {
      if (f.source === 'detected' && f.proto === explicit.proto && f.guestPort === explicit.guestPort) this.refresh(f);
    }
  }
}
