// Bounds the SSH channel opens in flight across all forwards. A burst of thousands of client connections waits here
// instead of asking sshd for thousands of channels at once. An open below the limits starts in the same tick: this
// sits on every connection's path, so it adds no promise hops of its own there.
//
// A guest service that stops accepting (paused in a debugger, a backlog of 5 that is full) leaves its opens hanging:
// sshd waits on its connect for about two minutes. So that it cannot hold up every other forward:
//   - each target (a forward) may hold at most a quarter of the slots, and slots that free up go round the
//     targets that wait, not to whoever queued first;
//   - an open stops counting after `slowMs`;
//   - while none of its opens has settled for `slowMs`, at most `maxWaiting` opens wait per target, and none waits
//     longer than `maxWaitMs`: past that the client is turned away at once (its connection reset), as a full listen
//     backlog would, instead of holding a file descriptor until the agent runs out of them. A burst to a target that
//     answers (thousands of connections at once) waits as long as it takes: its opens keep settling.

interface Waiter {
  start: () => void;
  fail: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface Target {
  active: number;
  waiting: Waiter[];
  /** When one of its opens last settled (performance.now()), or when it came. */
  settledAt: number;
}

export interface OpenGateOptions {
  /** How long an open counts against the limits at most. */
  slowMs?: number;
  /** Opens that may wait per target while none of its opens settles. */
  maxWaiting?: number;
  /** How long an open may wait for a slot. */
  maxWaitMs?: number;
}

/** Why an open was turned away without trying: too many wait for this target already, or waited too long. */
class OpenRefusedError extends Error {}

export class OpenGate {
  private active = 0;
  private waitingCount = 0;
  private readonly targets = new Map<string, Target>();
  /** Targets with waiting opens, in the order they get the next free slot. */
  private readonly turn: string[] = [];
  private readonly perTarget: number;
  private readonly slowMs: number;
  private readonly maxWaiting: number;
  private readonly maxWaitMs: number;

  constructor(
    private readonly limit: number,
    opts: OpenGateOptions = {},
  ) {
    if (!Number.isInteger(limit) || limit < 1)
      throw new RangeError(`open limit must be a positive integer, got ${limit}`);
    this.perTarget = Math.max(1, Math.floor(limit / 4));
    this.slowMs = opts.slowMs ?? 10_000;
    this.maxWaiting = opts.maxWaiting ?? 256;
    this.maxWaitMs = opts.maxWaitMs ?? 30_000;
  }

  /** Opens in flight, and opens waiting for a slot. */
  get counts(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.waitingCount };
  }

  /**
   * Runs `open` for `target` now when the limits allow, else once they do; settles as `open`'s promise does, or
   * rejects with OpenRefusedError when it may not wait.
   */
  run<T>(target: string, open: () => Promise<T>): Promise<T> {
    const t = this.targets.get(target) ?? this.add(target);
    if (this.active < this.limit && t.active < this.perTarget && t.waiting.length === 0)
      return this.start(target, t, open);
    if (t.waiting.length >= this.maxWaiting && performance.now() - t.settledAt > this.slowMs)
      return Promise.reject(
        new OpenRefusedError(`${t.waiting.length} connections already wait for ${target}, which does not answer`),
      );
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        start: () => this.start(target, t, open).then(resolve, reject),
        fail: reject,
        timer: setTimeout(() => {
          this.unqueue(target, t, waiter);
          reject(new OpenRefusedError(`no channel to ${target} within ${this.maxWaitMs / 1000} s: it does not answer`));
        }, this.maxWaitMs).unref(),
      };
      if (t.waiting.length === 0) this.turn.push(target);
      t.waiting.push(waiter);
      this.waitingCount++;
    });
  }

  /** Fails every waiting open with `reason` (e.g. the agent is stopping); opens in flight settle on their own. */
  clear(reason: string): void {
    const err = new Error(reason);
    for (const [key, t] of this.targets) {
      for (const w of t.waiting.splice(0)) {
        clearTimeout(w.timer);
        w.fail(err);
      }
      if (t.active === 0) this.targets.delete(key);
    }
    this.turn.length = 0;
    this.waitingCount = 0;
  }

  private add(key: string): Target {
    const t: Target = { active: 0, waiting: [], settledAt: performance.now() };
    this.targets.set(key, t);
    return t;
  }

  private start<T>(key: string, t: Target, open: () => Promise<T>): Promise<T> {
    this.active++;
    t.active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(slow);
      this.release(key, t);
    };
    const slow = setTimeout(release, this.slowMs);
    slow.unref();
    let opening: Promise<T>;
    try {
      opening = open();
    } catch (err) {
      opening = Promise.reject(err);
    }
    return opening.then(
      (value) => {
        t.settledAt = performance.now();
        release();
        return value;
      },
      (err: unknown) => {
        t.settledAt = performance.now();
        release();
        throw err;
      },
    );
  }

  private release(key: string, t: Target): void {
    this.active--;
    t.active--;
    if (t.active === 0 && t.waiting.length === 0) this.targets.delete(key);
    this.next();
  }

  /** Gives free slots to the waiting targets in turn, skipping those at their own limit. */
  private next(): void {
    for (let tries = this.turn.length; this.active < this.limit && tries > 0; tries--) {
      const key = this.turn.shift()!;
      const t = this.targets.get(key);
      if (!t || t.waiting.length === 0) continue;
      if (t.active >= this.perTarget) {
        this.turn.push(key);
        continue;
      }
      const w = t.waiting.shift()!;
      this.waitingCount--;
      clearTimeout(w.timer);
      if (t.waiting.length > 0) this.turn.push(key);
      w.start();
      tries = this.turn.length + 1;
    }
  }

  private unqueue(key: string, t: Target, w: Waiter): void {
    const i = t.waiting.indexOf(w);
    if (i < 0) return;
    t.waiting.splice(i, 1);
    this.waitingCount--;
    if (t.waiting.length === 0) {
      const at = this.turn.indexOf(key);
      if (at >= 0) this.turn.splice(at, 1);
      if (t.active === 0) this.targets.delete(key);
    }
  }
}
