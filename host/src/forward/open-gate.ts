// Bounds the SSH channel opens in flight across all forwards. A burst of thousands of client connections waits here,
// in arrival order, instead of asking sshd for thousands of channels at once. An open below the limit starts in the
// same tick: this sits on every connection's path, so it adds no promise hops of its own there. An open the guest
// leaves hanging (a service that drops SYNs: sshd waits on its connect for about two minutes) stops counting after
// `slowMs`, so a few stuck ports cannot hold up every other forward's connections. One sweep timer, running only
// while opens are in flight, finds those: a timer per open would cost every connection a timer of its own.

interface Waiter {
  start: () => void;
  fail: (err: Error) => void;
}

/** An open in flight: released once, by its outcome or by the sweep that finds it slow. */
interface Flight {
  released: boolean;
  /** The sweep tick it started in. */
  tick: number;
}

/** Sweeps per slowMs: an open stops counting between slowMs and slowMs plus one sweep interval after it started. */
const SWEEPS_PER_SLOW = 4;

export class OpenGate {
  private active = 0;
  private readonly waiting: Waiter[] = [];
  /** In start order; settled ones leave from the front as soon as they are there. */
  private readonly flights: Flight[] = [];
  private tick = 0;
  private sweeper: NodeJS.Timeout | null = null;

  constructor(
    private readonly limit: number,
    private readonly slowMs = 10_000,
  ) {
    if (!Number.isInteger(limit) || limit < 1)
      throw new RangeError(`open limit must be a positive integer, got ${limit}`);
  }

  /** Opens in flight, and opens waiting for a slot. */
  get counts(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.waiting.length };
  }

  /** Runs `open` now when a slot is free, else once one is; settles as `open`'s promise does. */
  run<T>(open: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) return this.start(open);
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ start: () => this.start(open).then(resolve, reject), fail: reject });
    });
  }

  /** Fails every waiting open with `reason` (e.g. the agent is stopping); opens in flight settle on their own. */
  clear(reason: string): void {
    const err = new Error(reason);
    for (const w of this.waiting.splice(0)) w.fail(err);
  }

  private start<T>(open: () => Promise<T>): Promise<T> {
    this.active++;
    const flight: Flight = { released: false, tick: this.tick };
    this.flights.push(flight);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), this.slowMs / SWEEPS_PER_SLOW);
      this.sweeper.unref();
    }
    let opening: Promise<T>;
    try {
      opening = open();
    } catch (err) {
      opening = Promise.reject(err);
    }
    return opening.then(
      (value) => {
        this.release(flight);
        return value;
      },
      (err: unknown) => {
        this.release(flight);
        throw err;
      },
    );
  }

  private release(flight: Flight): void {
    if (flight.released) return;
    flight.released = true;
    while (this.flights.length > 0 && this.flights[0].released) this.flights.shift();
    this.active--;
    this.waiting.shift()?.start();
  }

  /** Releases the opens that have been in flight for slowMs; stops the timer once none is in flight. */
  private sweep(): void {
    this.tick++;
    // In start order, so the first one that is not slow ends the search.
    for (const f of this.flights.slice()) {
      if (this.tick - f.tick <= SWEEPS_PER_SLOW) break;
      this.release(f);
    }
    if (this.flights.length === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }
}
