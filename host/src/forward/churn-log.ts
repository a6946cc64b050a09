// Logging of forwards that change faster than anyone reads: a guest server in a crash loop, or a broken guest agent
// reporting a listener on and off, would otherwise write two lines per cycle and rotate the log's history away (its
// files hold 50 MiB). Each forward id may log `perWindow` lines per window; what it changes beyond that is counted and
// summed up in one line when the window ends. Owns only those counters and the timer that sums them up.
import type { Logger } from '../log.js';

interface Window {
  startedAt: number;
  logged: number;
  held: number;
}

export class ChurnLog {
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly log: Logger,
    /** The forward's state as the summary is written (its last logged line may be any step of the churn). */
    private readonly stateOf: (id: string) => string,
    private readonly perWindow = 20,
    private readonly windowMs = 10_000,
  ) {}

  /** Whether a line about forward `id` may be logged now; one that may not is counted for the summary. */
  allow(id: string): boolean {
    const now = performance.now();
    let w = this.windows.get(id);
    if (!w || now - w.startedAt >= this.windowMs) {
      if (w?.held) this.summarize(id, w);
      w = { startedAt: now, logged: 0, held: 0 };
      this.windows.set(id, w);
      this.timer ??= setTimeout(() => this.flush(), this.windowMs).unref();
    }
    if (w.logged < this.perWindow) {
      w.logged++;
      return true;
    }
    w.held++;
    return false;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Sums up the windows that are over and forgets them (a forward that changed once is not remembered). */
  private flush(): void {
    this.timer = null;
    const now = performance.now();
    for (const [id, w] of this.windows) {
      if (now - w.startedAt < this.windowMs) continue;
      if (w.held) this.summarize(id, w);
      this.windows.delete(id);
    }
    if (this.windows.size > 0) this.timer = setTimeout(() => this.flush(), this.windowMs).unref();
  }

  private summarize(id: string, w: Window): void {
    const now = this.stateOf(id);
    this.log.warn(
      { forward: id, unlogged: w.held, now },
      `forward ${id} changed ${w.held} more times in ${this.windowMs / 1000} s than were logged: ` +
        `its guest listener keeps coming and going (a server restarting in a loop?); now: ${now}`,
    );
    w.held = 0;
  }
}
