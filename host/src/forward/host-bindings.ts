// The host bindings table: the host addresses the forwards listen on (TCP and UDP ports, unix socket files), keyed by
// address and shared, ref-counted, when several forwards map to the same one (guest 0.0.0.0:80 and :::80 both land on
// host 127.0.0.1:80 and [::1]:80). Owns each binding's listen attempts and what their failures mean (a busy address
// is a conflict, retried with backoff until it is free; EACCES wants privileges; errors that may pass are retried),
// and which forward a shared binding serves. The forwards' states stay the engine's: the table tells it, through
// onChange, whenever a binding's forwards may show something else.

import type { Logger } from '../log.js';
import type { ForwardHolder, ForwardSource } from '../model.js';
import type { GuestTarget, HostBinding, Route } from './binding.js';
import type { Reason } from './forward.js';
import { tcpPortHolder } from './port-holder.js';
import { privilegedError } from './privileged.js';
import { familyOf, guestTargetIP } from './rules.js';

type BindStatus = 'pending' | 'bound' | 'conflict' | 'privileged' | 'error';

const LOOPBACKS = new Set(['127.0.0.1', '::1']);
const ANY_OR_LOOPBACK = new Set(['0.0.0.0', '::', ...LOOPBACKS]);

/** What the table needs of a forward that uses a binding. */
export interface BindingRef extends Pick<GuestTarget, 'id' | 'guestPort' | 'stats' | 'opened'> {
  source: ForwardSource;
  guestIP: string;
  /** Why it is ignored: an ignored forward neither owns a binding nor is routed to. */
  ignored: Reason | null;
}

interface BindingEntry<F> {
  key: string;
  binding: HostBinding;
  /** The forwards that use it. */
  refs: Set<F>;
  status: BindStatus;
  /** Why it is not bound (or, retrying, not yet); null while bound. */
  error: string | null;
  retryDelay: number;
  timer: NodeJS.Timeout | null;
  closed: boolean;
  /** Settles after the first listen attempt. */
  settled: Promise<void>;
  /** Who holds the address while its status is `conflict`; null otherwise. */
  holder: ForwardHolder | null;
}

/** What the engine sees of one binding. */
export type BindingView<F> = Readonly<Pick<BindingEntry<F>, 'binding' | 'refs' | 'status' | 'error' | 'holder'>>;

interface HostBindingsOptions<F> {
  log: Logger;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** A binding's status or owner changed: forward `f`, which uses it, may show another state. */
  onChange: (f: F) => void;
  /** Another tether instance's forward that holds the busy binding at `key`, when one does (agent/peer-forwards.ts). */
  peerHolder?: (key: string) => Promise<ForwardHolder | null>;
}

function busyMessage(addr: string, holder: ForwardHolder): string {
  if (holder.kind === 'connection')
    return (
      `host address ${addr} is held by a connection from that port, not by a listener (an outgoing connection, or ` +
      'one closed less than a minute ago, in TIME-WAIT); retrying until it is free'
    );
  const who =
    holder.kind === 'forward'
      ? `tether's forward ${holder.id} (on ${holder.address})`
      : holder.kind === 'instance'
        ? `tether instance ${holder.instance} (its forward ${holder.id}${holder.address === addr ? '' : `, on ${holder.address}`}${holder.state === 'suspended' ? ', suspended: its guest is unreachable' : ''})`
        : 'another process';
  return `host address ${addr} is in use by ${who}; retrying until it is free`;
}

/** Bind errors that may go away by themselves, retried like a busy port; the error says so with RETRYING. */
const TRANSIENT_BIND_ERRORS = new Set(['EADDRNOTAVAIL', 'EMFILE', 'ENFILE', 'ENOBUFS']);
export const RETRYING = '; retrying';

const NONE: ReadonlySet<never> = new Set();

/** The key of the binding of a host address: `tcp/127.0.0.1:8080`, `udp/[::1]:53`, `unix/<socket path>`. */
export function bindingKey(proto: 'tcp' | 'udp' | 'unix', address: string): string {
  return `${proto}/${address}`;
}

/** A host without IPv6 (or without that loopback) will not get it later: not worth retrying every few seconds. */
function noLoopbackHere(code: string, addr: string): boolean {
  return code === 'EADDRNOTAVAIL' && (addr.startsWith('[::1]:') || addr.startsWith('127.'));
}

/** The proto, host IP and port of a binding key (`tcp/127.0.0.1:8080`, `udp/[::1]:53`); null for unix sockets. */
function hostAddrOfKey(key: string): { proto: string; ip: string; port: number } | null {
  const m = /^(tcp|udp)\/\[?([^\]]*?)\]?:(\d+)$/.exec(key);
  return m ? { proto: m[1], ip: m[2], port: Number(m[3]) } : null;
}

/** Two host addresses of one port that cannot both be bound: the same, or a wildcard and an address of its family. */
function overlaps(a: string, b: string): boolean {
  if (a === b) return true;
  const v6 = (ip: string) => ip.includes(':');
  if (v6(a) !== v6(b)) return false;
  return a === '0.0.0.0' || a === '::' || b === '0.0.0.0' || b === '::';
}

/**
 * Whether the binding at `outer` takes every connection the one at `inner` would: the same key, or a wildcard over an
 * address of its family (0.0.0.0:P covers 127.0.0.1:P; not the other way round).
 */
export function keyCovers(outer: string, inner: string): boolean {
  if (outer === inner) return true;
  const o = hostAddrOfKey(outer);
  const i = hostAddrOfKey(inner);
  if (!o || !i || o.proto !== i.proto || o.port !== i.port) return false;
  return (o.ip === '0.0.0.0' && !i.ip.includes(':')) || (o.ip === '::' && i.ip.includes(':'));
}

/** Whether the bindings at two keys cannot both listen: the same key, or overlapping addresses of one proto and port. */
export function keysOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  const x = hostAddrOfKey(a);
  const y = hostAddrOfKey(b);
  return !!x && !!y && x.proto === y.proto && x.port === y.port && overlaps(x.ip, y.ip);
}

export class HostBindings<F extends BindingRef> {
  private readonly entries = new Map<string, BindingEntry<F>>();
  private readonly retryInitialMs: number;
  private stopped = false;

  constructor(private readonly opts: HostBindingsOptions<F>) {
    this.retryInitialMs = opts.retryInitialMs ?? 250;
  }

  /**
   * `f` uses the binding at `key`, which `make` creates (and the table listens on) when no forward uses it yet.
   * Resolves once the binding's first listen attempt settled.
   */
  acquire(f: F, key: string, make: (route: Route) => HostBinding): Promise<void> {
    const existing = this.entries.get(key);
    if (existing) {
      existing.refs.add(f);
      return existing.settled.then(() => this.changed(existing));
    }
    // The binding's route reads the entry it belongs to, so the entry exists before the binding; its first listen
    // attempt, after both.
    let entry: BindingEntry<F> | undefined;
    const binding = make((family) => (entry ? this.route(entry, family) : null));
    entry = {
      key,
      binding,
      refs: new Set([f]),
      status: 'pending',
      error: null,
      retryDelay: this.retryInitialMs,
      timer: null,
      closed: false,
      settled: Promise.resolve(),
      holder: null,
    };
    this.entries.set(key, entry);
    entry.settled = this.attempt(entry);
    return entry.settled;
  }

  /** `f` no longer uses the bindings at `keys`; one that no forward uses any more is closed. */
  release(f: F, keys: readonly string[]): void {
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (!entry) continue;
      entry.refs.delete(f);
      if (entry.refs.size === 0) {
        this.entries.delete(key);
        void this.closeEntry(entry).then(() => this.retryOverlapping(entry));
      } else {
        // A forward that waited for this host port (another guest port) may own it now.
        this.changed(entry);
      }
    }
  }

  /** The bindings at `keys` that exist. */
  of(keys: readonly string[]): BindingView<F>[] {
    return keys.map((k) => this.entries.get(k)).filter((e): e is BindingEntry<F> => !!e);
  }

  /** The forwards that use bindings other than the one at `key` whose addresses overlap it (see keysOverlap). */
  overlapping(key: string): F[] {
    return this.overlappingEntries(key).flatMap((e) => [...e.refs]);
  }

  /** The forwards that use the binding at `key` (none when there is no binding there). */
  refs(key: string): ReadonlySet<F> {
    return this.entries.get(key)?.refs ?? NONE;
  }

  /**
   * The forward a shared host binding serves. Guest listeners on one port (0.0.0.0 and :: alike) share it; a forward
   * to another guest port cannot, and waits in `conflict` until the owner goes. An explicit forward (static rule,
   * forward add) owns the port before a detected one: the operator asked for that host port.
   */
  owner(entry: BindingView<F>): F | undefined {
    let first: F | undefined;
    for (const f of entry.refs) {
      if (f.ignored) continue;
      if (f.source !== 'detected') return f;
      first ??= f;
    }
    return first;
  }

  /** Closes every binding; listen attempts still running close theirs when they end. */
  async stop(): Promise<void> {
    this.stopped = true;
    const closing = [...this.entries.values()].map((e) => this.closeEntry(e));
    this.entries.clear();
    await Promise.all(closing);
  }

  /** Other bindings whose addresses overlap `entry`'s (a wildcard and an address of its family, same proto and port). */
  private overlappingEntries(key: string): BindingEntry<F>[] {
    const out: BindingEntry<F>[] = [];
    for (const other of this.entries.values()) if (other.key !== key && keysOverlap(key, other.key)) out.push(other);
    return out;
  }

  /** A closed binding freed its address: the overlapping ones waiting for it (`conflict`) try now, not at their timer. */
  private retryOverlapping(closed: BindingEntry<F>): void {
    if (this.stopped) return;
    for (const other of this.overlappingEntries(closed.key)) {
      if (other.status !== 'conflict' || !other.timer) continue;
      clearTimeout(other.timer);
      other.timer = null;
      void this.attempt(other);
    }
  }

  private changed(entry: BindingEntry<F>): void {
    for (const f of entry.refs) this.opts.onChange(f);
  }

  private closeEntry(entry: BindingEntry<F>): Promise<void> {
    entry.closed = true;
    if (entry.timer) clearTimeout(entry.timer);
    return entry.binding.close().catch((err: Error) => {
      this.opts.log.warn({ address: entry.binding.address }, `closing ${entry.binding.address} failed: ${err.message}`);
    });
  }

  /**
   * The forward a connection to the binding reaches: of its owner's guest port, a listener of the binding's own
   * family where there is one (guest ::1 for host [::1]), as `route` picks it; of two in that family, the one on its
   * loopback, which the guest kernel gives what is sent to loopback (a UDP server on 127.0.0.1 beside one on 0.0.0.0).
   */
  servedBy(entry: BindingView<F>): F | undefined {
    return this.pick(entry, entry.binding.address.startsWith('[') ? 6 : 4);
  }

  private pick(entry: BindingView<F>, family: 4 | 6): F | undefined {
    const owner = this.owner(entry);
    // An added or static forward to one guest address (`8053:127.0.0.53:53`) goes there, whatever else listens.
    if (owner && owner.source !== 'detected' && !ANY_OR_LOOPBACK.has(owner.guestIP)) return owner;
    const loopback = family === 4 ? '127.0.0.1' : '::1';
    let pick: F | undefined;
    let rank = 0;
    for (const f of entry.refs) {
      if (f.ignored || f.guestPort !== owner?.guestPort) continue;
      // A wildcard of the other family is reached through its loopback too, which the listener there is given.
      const r = f.guestIP === loopback ? 4 : familyOf(f.guestIP) === family ? 3 : LOOPBACKS.has(f.guestIP) ? 2 : 1;
      if (r > rank) [pick, rank] = [f, r];
    }
    return pick;
  }

  private route(entry: BindingEntry<F>, family: 4 | 6): GuestTarget | null {
    const pick = this.pick(entry, family);
    if (!pick) return null;
    const { id, guestPort, stats, opened } = pick;
    return { id, ...guestTargetIP(pick.guestIP, family, pick.source !== 'detected'), guestPort, stats, opened };
  }

  private attempt(entry: BindingEntry<F>): Promise<void> {
    entry.status = 'pending';
    return entry.binding.listen().then(
      () => {
        if (entry.closed || this.stopped) {
          void entry.binding.close();
          return;
        }
        entry.status = 'bound';
        entry.error = null;
        entry.holder = null;
        entry.retryDelay = this.retryInitialMs;
        this.changed(entry);
      },
      async (err: NodeJS.ErrnoException) => {
        if (entry.closed || this.stopped) return;
        // Who holds a busy port is known before the conflict is shown or logged: its first word is the one kept.
        const outside =
          err.code === 'EADDRINUSE' && !this.holdingForward(entry) ? await this.outsideHolder(entry) : null;
        if (entry.closed || this.stopped) return;
        this.failed(entry, err, outside);
        this.changed(entry);
      },
    );
  }

  /** What a failed listen means: the binding's status and error, and whether it is tried again. */
  private failed(entry: BindingEntry<F>, err: NodeJS.ErrnoException, outside: ForwardHolder | null): void {
    const addr = entry.binding.address;
    entry.holder = null;
    if (err.code === 'EADDRINUSE') {
      entry.status = 'conflict';
      const own = this.holdingForward(entry);
      entry.holder = own ?? outside ?? { kind: 'process' };
      entry.error = busyMessage(addr, entry.holder);
      this.scheduleRetry(entry);
    } else if (err.code === 'EACCES' && entry.key.startsWith('unix/')) {
      entry.status = 'error';
      entry.error = `cannot create the socket ${addr}: permission denied (EACCES); pick a host path in a directory you can write`;
    } else if (err.code === 'EACCES') {
      entry.status = 'privileged';
      entry.error = privilegedError([addr]);
    } else if (err.code && TRANSIENT_BIND_ERRORS.has(err.code) && !noLoopbackHere(err.code, addr)) {
      // An address that comes with a VPN or Wi-Fi later, or file descriptors that free up: worth another try.
      entry.status = 'error';
      entry.error = `cannot listen on ${addr}: ${err.message}${RETRYING}`;
      this.scheduleRetry(entry);
    } else {
      entry.status = 'error';
      entry.error = `cannot listen on ${addr}: ${err.message}`;
    }
  }

  /**
   * Which of tether's own forwards holds the host address a binding could not get: one that listens on the same port
   * where the addresses overlap (a wildcard and a specific address of one family); null when another process does.
   */
  private holdingForward(entry: BindingEntry<F>): ForwardHolder | null {
    for (const other of this.overlappingEntries(entry.key)) {
      if (other.status !== 'bound') continue;
      const holder = this.owner(other);
      if (holder) return { kind: 'forward', id: holder.id, address: other.binding.address };
    }
    return null;
  }

  /**
   * Who outside this agent holds a busy address: only connections from it, not a listener (port-holder.ts), or
   * another tether instance's forward; another process when neither.
   */
  private async outsideHolder(entry: BindingEntry<F>): Promise<ForwardHolder> {
    const a = entry.key.startsWith('tcp/') ? hostAddrOfKey(entry.key) : null;
    if (a !== null && (await tcpPortHolder(a.ip, a.port)) === 'connection') return { kind: 'connection' };
    return (await this.opts.peerHolder?.(entry.key).catch(() => null)) ?? { kind: 'process' };
  }

  private scheduleRetry(entry: BindingEntry<F>): void {
    const max = this.opts.retryMaxMs ?? 2_000;
    const delay = Math.round(entry.retryDelay * (0.75 + Math.random() * 0.5));
    entry.retryDelay = Math.min(max, entry.retryDelay * 2);
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (!entry.closed) void this.attempt(entry);
    }, delay);
  }
}
