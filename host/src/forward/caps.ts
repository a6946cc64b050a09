// The cap on detected forwards (maxForwards) against a guest that reports absurd numbers of listeners: how many
// detected forwards bind host addresses and how many are ignored (each kind capped on its own, so ignored listeners
// never take a forwarded one's place), which guest listeners wait for a slot meanwhile, and the one warning per
// overflow. Counts, not walks: checking the cap must not visit every forward.
import type { Logger } from '../log.js';

export type CapKind = 'forwarded' | 'ignored';

/** Below this share of the cap again, a later overflow is news (hysteresis: churn at the cap does not repeat it). */
const REWARN_BELOW = 0.9;

export class ForwardCaps {
  private readonly counts: Record<CapKind, number> = { forwarded: 0, ignored: 0 };
  /** Guest listeners (by id) left out, per cap; each takes the place of one of its kind that goes. */
  private readonly waiting: Record<CapKind, Set<string>> = { forwarded: new Set(), ignored: new Set() };
  private warned = false;

  constructor(
    private readonly max: number,
    private readonly log: Logger,
  ) {}

  /** Guest listeners not forwarded (or listed) because of the caps, right now. */
  get capped(): number {
    return this.waiting.forwarded.size + this.waiting.ignored.size;
  }

  /** Detected forwards of both kinds: grows when a waiting listener got its slot. */
  get total(): number {
    return this.counts.forwarded + this.counts.ignored;
  }

  /**
   * Whether a detected forward of this kind for listener `id` fits under its cap. When it does not, the listener
   * waits for a slot (the first overflow is logged).
   */
  fits(kind: CapKind, id: string): boolean {
    if (this.counts[kind] < this.max) return true;
    this.waiting[kind].add(id);
    if (!this.warned) {
      this.warned = true;
      this.log.warn(
        { maxForwards: this.max },
        `guest reports more listeners than maxForwards (${this.max}); the rest are not forwarded or listed`,
      );
    }
    return false;
  }

  added(kind: CapKind): void {
    this.counts[kind]++;
  }

  removed(kind: CapKind): void {
    this.counts[kind]--;
    if (kind === 'forwarded' && this.counts.forwarded < this.max * REWARN_BELOW) this.warned = false;
  }

  /** A detected forward became ignored (`forward rm`): it counts against the other cap now. */
  ignoredNow(): void {
    this.counts.forwarded--;
    this.counts.ignored++;
  }

  /** Listener `id` no longer waits: it went, or an explicit forward serves it. */
  forget(id: string): void {
    this.waiting.forwarded.delete(id);
    this.waiting.ignored.delete(id);
  }

  /** A full snapshot comes: who waits is worked out again from it. */
  clearWaiting(): void {
    this.waiting.forwarded.clear();
    this.waiting.ignored.clear();
  }

  /** The engine stopped: no forwards. */
  reset(): void {
    this.counts.forwarded = 0;
    this.counts.ignored = 0;
  }

  /** The listeners waiting for a slot of this kind, oldest first, each taken out as it is handed over. */
  *takeWaiting(kind: CapKind): Generator<string> {
    for (const id of [...this.waiting[kind]]) {
      this.waiting[kind].delete(id);
      yield id;
    }
  }
}
