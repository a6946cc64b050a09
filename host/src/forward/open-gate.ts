// Bounds the SSH channel opens in flight across all forwards. A burst of thousands of client connections waits here,
// in arrival order, instead of asking sshd for thousands of channels at once. An open below the limit starts in the
// same tick: this sits on every connection's path, so it adds no promise hops of its own there. An open the guest
// leaves hanging (a service that drops SYNs: sshd waits on its connect for about two minutes) stops counting after
// `slowMs`, so a few stuck ports cannot hold up every other forward's connections.

interface Waiter {
  start: () => void;
  fail: (err: Error) => void;
}

export class OpenGate {
  private active = 0;
  private readonly waiting: Waiter[] = [];

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
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(slow);
      this.release();
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
        release();
        return value;
      },
      (err: unknown) => {
        release();
        throw err;
      },
    );
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.start();
  }
}
