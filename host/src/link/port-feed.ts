// The guest's listener table as it arrives on one link: the snapshot that answers ports.subscribe, then deltas applied
// strictly in sequence. A delta that skips a number asks for a fresh snapshot; deltas that come while a snapshot is
// awaited are held and applied after it. Guest command lines are made inert on the way. Knows nothing of forwards:
// it hands listeners to its sink, and stops once its link is no longer the current one.
import type { Listener, Peer, PortDelta, PortSnapshot } from '@tether/protocol';
import { guestText } from '../inert-text.js';
import type { Logger } from '../log.js';

/** Deltas kept while a snapshot is awaited; a guest sends a handful per scan. */
const MAX_HELD_DELTAS = 1_024;

/** Where the listeners go (the link re-emits them as `snapshot` and `delta`). */
export interface PortSink {
  snapshot(listeners: Listener[]): void;
  delta(delta: PortDelta): void;
}

export class PortFeed {
  private seq: number | null = null;
  /** Deltas waiting for a snapshot (the subscription's, or a resync's); null when none is awaited. */
  private held: PortDelta[] | null = [];

  /** Follows `peer`'s port events while `current()` says its link is the link's current one. */
  constructor(
    private readonly peer: Peer,
    private readonly current: () => boolean,
    private readonly sink: PortSink,
    private readonly log: Logger,
  ) {
    peer.onEvent('ports.delta', (d) => this.onDelta(d));
  }

  /** A full table (the subscription's answer, or a resync's): replaces all before it, then the held deltas apply. */
  applySnapshot(snapshot: PortSnapshot): void {
    if (!this.current()) return;
    this.seq = snapshot.seq;
    this.sink.snapshot(inertListeners(snapshot.listeners));
    const held = this.held ?? [];
    this.held = null;
    for (const d of held) this.onDelta(d);
  }

  private onDelta(delta: PortDelta): void {
    if (!this.current()) return;
    if (this.held) {
      // Subscribe or resync in flight: applied after the snapshot. A guest that floods deltas meanwhile has them
      // dropped (the snapshot's seq makes later ones look like a gap, which asks for a fresh snapshot).
      if (this.held.length < MAX_HELD_DELTAS) this.held.push(delta);
      return;
    }
    if (this.seq !== null && delta.seq <= this.seq) {
      // Already covered by a snapshot (or a guest counting backwards: the next gap asks for a snapshot anyway).
      this.log.debug({ got: delta.seq, held: this.seq }, 'port delta at or below the sequence held; dropped');
      return;
    }
    if (this.seq !== null && delta.seq !== this.seq + 1) {
      this.log.warn({ expected: this.seq + 1, got: delta.seq }, 'port event sequence gap; asking for a snapshot');
      this.held = [];
      this.peer.request('ports.snapshot', {}).then(
        (s) => this.applySnapshot(s),
        (err: Error) => this.peer.close(`ports.snapshot failed: ${err.message}`),
      );
      return;
    }
    this.seq = delta.seq;
    this.sink.delta({ ...delta, added: inertListeners(delta.added), removed: inertListeners(delta.removed) });
  }
}

/** Listeners with their process command lines made inert, as one line each. */
function inertListeners(listeners: readonly Listener[]): Listener[] {
  return listeners.map((l) => {
    const command = l.command === null ? null : guestText(l.command);
    return command === l.command ? l : { ...l, command }; // a snapshot may hold 100,000: copy only what changes
  });
}
