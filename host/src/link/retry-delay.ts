// How long the link waits before its next try, given how the last link ended: doubling from retryInitialMs up to
// retryMaxMs; back to the start after a link that served; longer while sshd blocks the channel; and, after links in a
// row that a broken or hostile agent ended (a protocol error, or closed right after coming up), up to
// brokenRetryMaxMs: such an agent would otherwise be linked anew, and its forwards resumed and suspended, every few
// hundred ms. One per SSH connection; it only computes delays (and says when the back-off starts).
import { ProtocolError } from '@tether/protocol';
import type { Logger } from '../log.js';

/** Links in a row broken, or closed within BRIEF_LINK_MS of coming up, after which retries back off further. */
const BREAKS_BEFORE_BACKOFF = 3;
/** A link that closes sooner than this after coming up counts towards the back-off, as a broken one does. */
const BRIEF_LINK_MS = 2_000;
/** How far retries back off after BREAKS_BEFORE_BACKOFF broken links. */
const BROKEN_RETRY_MAX_MS = 30_000;
/** The retry interval while blocked: an SSH connection keeps the sshd settings it was opened with. */
const BLOCKED_RETRY_MS = 10_000;

/**
 * How one try ended: the link served (`was-up`), served briefly (`brief`), the agent broke the protocol after its
 * hello (`broke`), there was no link (`failed`), or none can come on this SSH connection (`blocked`).
 */
export type LinkEnd = 'was-up' | 'brief' | 'broke' | 'failed' | 'blocked';

/** How a link that was up ended: `closeError` is the error that closed it, if any. */
export function endOfLink(upForMs: number, closeError: Error | undefined): LinkEnd {
  if (closeError instanceof ProtocolError) return 'broke';
  return upForMs < BRIEF_LINK_MS ? 'brief' : 'was-up';
}

export interface RetryOptions {
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Retry interval cap after links in a row closed by the agent breaking the protocol (default 30 s). */
  brokenRetryMaxMs?: number;
  /** Retry interval while blocked (default 10 s). */
  blockedRetryMs?: number;
}

export class RetryDelay {
  private readonly initial: number;
  private readonly max: number;
  private readonly brokenMax: number;
  private delay: number;
  /** Links in a row that ended `broke` or `brief`. */
  private broken = 0;

  constructor(
    private readonly opts: RetryOptions,
    private readonly log: Logger,
  ) {
    this.initial = opts.retryInitialMs ?? 100;
    this.max = opts.retryMaxMs ?? 2_000;
    this.brokenMax = opts.brokenRetryMaxMs ?? BROKEN_RETRY_MAX_MS;
    this.delay = this.initial;
  }

  /** The wait before the next try after one that ended as `end`. */
  after(end: LinkEnd): number {
    if (end === 'broke' || end === 'brief') {
      this.broken++;
      if (this.broken === BREAKS_BEFORE_BACKOFF) this.warnBackoff(end);
    } else if (end === 'was-up') this.broken = 0;
    // A link that came up at all starts the doubling over, unless its agent keeps breaking links.
    if (end !== 'failed' && end !== 'blocked')
      this.delay = this.backingOff() ? Math.max(this.delay, this.max) : this.initial;
    const wait = end === 'blocked' ? Math.max(this.delay, this.opts.blockedRetryMs ?? BLOCKED_RETRY_MS) : this.delay;
    this.delay = Math.min(this.backingOff() ? this.brokenMax : this.max, this.delay * 2);
    return wait;
  }

  private backingOff(): boolean {
    return this.broken >= BREAKS_BEFORE_BACKOFF;
  }

  private warnBackoff(end: 'broke' | 'brief'): void {
    const what =
      end === 'broke'
        ? `broke the protocol on ${this.broken} links in a row`
        : `ended ${this.broken} links in a row within ${BRIEF_LINK_MS / 1000} s of their start`;
    this.log.warn(
      { broken: this.broken },
      `the guest agent ${what}; trying it less often, up to every ${this.brokenMax / 1000} s`,
    );
  }
}
