// Logging of dropped traffic that may come in floods (UDP datagrams from either side of the link): the first drop of a
// kind is logged at once with its own details, then only how many more there were per interval. Both agents use it
// with their own logger. Owns nothing but its counter and timer.

/** What DropLog needs of a logger (pino's and the guest's both fit). */
export interface WarnLogger {
  warn(fields: object, msg: string): void;
}

export class DropLog {
  private more = 0;
  private loggedAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | null = null;

  /** `what` names the kind in the summary lines, e.g. `udp reply for unknown flow`. */
  constructor(
    private readonly log: WarnLogger,
    private readonly what: string,
    private readonly intervalMs = 10_000,
  ) {}

  /** One more dropped; `fields` and `msg` describe it when it is the one logged on its own. */
  add(fields: object, msg: string): void {
    const now = performance.now();
    if (now - this.loggedAt >= this.intervalMs) {
      this.loggedAt = now;
      this.log.warn(fields, msg);
      return;
    }
    this.more++;
    this.timer ??= setTimeout(() => this.summarize(), this.loggedAt + this.intervalMs - now).unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private summarize(): void {
    this.timer = null;
    this.loggedAt = performance.now();
    this.log.warn(
      { dropped: this.more },
      `${this.what}: ${this.more} more dropped in the last ${this.intervalMs / 1000} s`,
    );
    this.more = 0;
  }
}
