// One forward as the engine keeps it: where its traffic goes, what it holds on the host, why it may not serve, its
// counters, and the view of it that `forward ls` and the control API show. The engine decides; this is the record.
import type { Listener } from '@tether/protocol';
import type { ForwardCause, ForwardHolder, ForwardSource, ForwardState, ForwardView } from '../model.js';
import type { ForwardStats } from './binding.js';
import type { SocketLook } from './socket-look.js';

export type Proto = ForwardView['proto'];

/** Why a forward does not serve as it would: the code that code acts on (ForwardView.cause), and the words shown. */
export interface Reason<C extends ForwardCause = ForwardCause> {
  cause: C;
  text: string;
}

export interface Forward {
  id: string;
  proto: Proto;
  source: ForwardSource;
  guestAddr: string;
  /** Where connections go: `askedIP`, or for an explicit localhost forward, the loopback its listener took. */
  guestIP: string;
  /** The guest address the rule, `forward add` or the listener named. */
  askedIP: string;
  guestPort: number;
  hostAddrs: string[];
  bindingKeys: string[];
  process: { pid: number; command: string } | null;
  /** Why it is ignored (a rule, the guest's sshd port, `forward rm`); null when it forwards. A capped listener has no Forward. */
  ignored: Reason<'removed' | 'rule'> | null;
  /** Why it is suspended (the agent link down; for an explicit forward, SSH down); null otherwise. */
  suspended: Reason<'ssh-down' | 'link-down'> | null;
  /**
   * Why its channels fail for every connection alike (sshd prohibits them; for a unix socket: missing, stale, not the
   * login user's to open); null once one opens.
   */
  refused: Reason<'service-down' | 'guest-socket' | 'sshd-refuses' | 'host-socket-taken'> | null;
  /** Unix socket forwards: the look at the guest socket (null for ports). */
  look: SocketLook | null;
  /** When a failed connection was last warned about, and how many failed since without a line. */
  openWarn: { at: number; suppressed: number };
  /** Takes each channel open's outcome (GuestTarget.opened). */
  opened: (err: Error | null) => void;
  stats: ForwardStats;
  state: ForwardState | null;
  error: string | null;
  /** What the error comes from (ForwardView.cause). */
  cause: ForwardCause | null;
  /** Who holds the host address while in conflict (ForwardView.heldBy). */
  heldBy: ForwardHolder | null;
  since: Date;
}

/** What a new forward is made of; everything else starts empty. */
export interface ForwardInit {
  id: string;
  proto: Proto;
  source: ForwardSource;
  guestAddr: string;
  guestIP: string;
  guestPort: number;
  suspended: Forward['suspended'];
  opened: (f: Forward, err: Error | null) => void;
}

export function newForward(init: ForwardInit): Forward {
  const { opened, ...fields } = init;
  const f: Forward = {
    ...fields,
    askedIP: init.guestIP,
    hostAddrs: [],
    bindingKeys: [],
    process: null,
    ignored: null,
    refused: null,
    look: null,
    openWarn: { at: -Infinity, suppressed: 0 },
    opened: (err) => opened(f, err),
    stats: { connections: 0, bytesIn: 0, bytesOut: 0 },
    state: null,
    error: null,
    cause: null,
    heldBy: null,
    since: new Date(),
  };
  return f;
}

/**
 * A listener's process as forwards show it. A port a DNAT rule publishes has no process but names the rule: pid 0,
 * the guest kernel, answers it.
 */
export function processOf(l: Listener): Forward['process'] {
  if (l.pid !== null) return { pid: l.pid, command: l.command ?? '' };
  return l.command ? { pid: 0, command: l.command } : null;
}

/** `hostAddrs`: the host addresses to show, when not all of the forward's reach it (see ForwardViews.servedAddrs). */
export function toView(f: Forward, hostAddrs: readonly string[] = f.hostAddrs): ForwardView {
  return {
    id: f.id,
    proto: f.proto,
    guestAddr: f.guestAddr,
    hostAddrs: [...hostAddrs],
    state: f.state ?? 'error',
    process: f.process,
    connections: f.stats.connections,
    bytesIn: f.stats.bytesIn,
    bytesOut: f.stats.bytesOut,
    since: f.since.toISOString(),
    error: f.error,
    heldBy: f.heldBy,
    cause: f.cause,
    source: f.source,
  };
}
