// Starting the guest agent, as the link asks for it: whether a start could help a socket that does not answer at all,
// when one may run, replacing an agent that is not this host's build, and replacing one that takes connections
// but never answers. Owns the throttles between starts and `outdated`; what a start does is ensureAgent's business
// (provisioning), and when to ask is the link's.
import type { Info } from '@tether/protocol';
import type { Logger } from '../log.js';

/** The guest agent is started at most this often unless one served meanwhile (options: ensureIntervalMs). */
const ENSURE_INTERVAL_MS = 5_000;
/** An agent link up this long before it closed makes the next start of the agent immediate (served). */
const SERVED_BEFORE_PROMPT_RESTART_MS = 10_000;
/** A guest agent that does not answer is replaced at most this often. */
const HUNG_REPLACE_INTERVAL_MS = 60_000;

export interface StartOptions {
  /**
   * Called when the socket does not answer (channel open failure): start or provision the guest agent. With
   * `replace`, an agent answers but must make way for this host's build (see `outdated`).
   */
  ensureAgent?: (reason: string, replace?: boolean) => Promise<void>;
  /**
   * Why a running agent is not the build this host ships (null when it is); `build` is null from an agent too old
   * to say. With ensureAgent such an agent is replaced; without, it serves and `outdated` says why.
   */
  outdated?: (info: Info, build: string | null) => string | null;
  /**
   * Called on a channel open failure before ensureAgent: resolves with a message when the cause is one that starting
   * the agent cannot fix (sshd refuses unix-socket forwarding to a running agent). The link then reports `blocked`,
   * does not call ensureAgent, and retries only every blockedRetryMs.
   */
  explainOpenFailure?: (err: Error) => Promise<string | null>;
  /** Minimum time between two ensureAgent calls, unless an agent served for servedBeforePromptRestartMs between them. */
  ensureIntervalMs?: number;
  /** A link up this long before it closed makes the next ensureAgent call immediate (default 10 s). */
  servedBeforePromptRestartMs?: number;
}

/** What starting needs from the link. */
export interface StartContext {
  log: Logger;
  socket(): string;
  /** Why the guest is not to have its agent started now: it said it shuts down (guest-shutdown.ts). */
  guestStopping(): string | null;
  /** A start that failed: the link's last error. */
  fail(message: string): void;
  /** The agent about to start gets the full wait for its hello (liveness.ts). */
  fresh(): void;
}

export class AgentStarts {
  /**
   * Why the agent in use is not this host's build, when replacing it failed or did not help, or nothing may replace
   * it (no ensureAgent); null otherwise.
   */
  outdated: string | null = null;
  private everStarted = false;
  /**
   * Where ensureIntervalMs counts from (performance.now(): a wall-clock step must not stall or hurry restarts): the
   * last start, unless an agent has served for a while since. An agent that crashes at start is started at most every
   * ensureIntervalMs; one that served, and then was killed or crashed, is started again at once.
   */
  private throttleFrom = Number.NEGATIVE_INFINITY;
  /** The agent did not answer and throttleFrom held its start back; cleared by the next try. */
  private heldBack = false;
  /** A replacement was tried on this SSH connection. */
  private replaceTried = false;
  /** performance.now() of the last replacement of an agent that did not answer (replaceHung). */
  private lastHungReplace = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly opts: StartOptions,
    private readonly ctx: StartContext,
  ) {}

  /** No start was tried yet, and one will be: a missing agent is the expected case that provisioning handles. */
  get firstPending(): boolean {
    return !this.everStarted && this.opts.ensureAgent !== undefined;
  }

  /** When a start held back by the throttle may run (Date.now() scale); null when none is held back. */
  heldBackUntil(): number | null {
    if (!this.heldBack) return null;
    const interval = this.opts.ensureIntervalMs ?? ENSURE_INTERVAL_MS;
    return Date.now() + Math.max(0, this.throttleFrom + interval - performance.now());
  }

  /** Nothing is held back: the link is up, or waiting cannot help (blocked). */
  cancelHeldBack(): void {
    this.heldBack = false;
  }

  /** A new SSH connection: whatever answers on it may be replaced once more. */
  newConnection(): void {
    this.replaceTried = false;
  }

  /** A link that was up closed after `upForMs`: an agent that served long enough is started again at once. */
  served(upForMs: number): void {
    if (upForMs >= (this.opts.servedBeforePromptRestartMs ?? SERVED_BEFORE_PROMPT_RESTART_MS))
      this.throttleFrom = Number.NEGATIVE_INFINITY;
  }

  /**
   * Why starting the agent cannot make the socket answer after `err` (the explainOpenFailure verdict), or null; a
   * failing check (e.g. the connection dropped) explains nothing.
   */
  async cannotHelp(err: Error): Promise<string | null> {
    const explain = this.opts.explainOpenFailure;
    if (!explain) return null;
    try {
      return await explain(err);
    } catch (checkErr) {
      this.ctx.log.debug({ err: checkErr }, `cannot tell why ${this.ctx.socket()} does not answer`);
      return null;
    }
  }

  /** The socket does not answer (`reason`): start the agent, unless the guest shuts down or the throttle holds. */
  async startIfDown(reason: string): Promise<void> {
    const ensure = this.opts.ensureAgent;
    const interval = this.opts.ensureIntervalMs ?? ENSURE_INTERVAL_MS;
    const stopping = this.ctx.guestStopping() !== null;
    this.heldBack = !!ensure && !stopping && performance.now() - this.throttleFrom < interval;
    if (!ensure || stopping || this.heldBack) return;
    this.markStart();
    this.ctx.log.info(
      { socket: this.ctx.socket(), reason },
      'guest agent not answering; provisioning looks at the guest and starts it (or waits for systemd to)',
    );
    this.ctx.fresh();
    await this.run(ensure, reason, false, 'cannot start the guest agent');
  }

  /** Why the agent that greeted is to be replaced, or null; without ensureAgent it serves and `outdated` says why. */
  outdatedReason(info: Info, build: string | null): string | null {
    const reason = this.opts.outdated?.(info, build) ?? null;
    if (!reason) this.outdated = null;
    else if (!this.opts.ensureAgent && reason !== this.outdated) {
      // Nothing here may replace it: it serves, and the log and status say that it is not this host's build.
      this.outdated = reason;
      this.ctx.log.warn({ socket: this.ctx.socket(), outdated: true }, reason);
    }
    return this.opts.ensureAgent ? reason : null;
  }

  /**
   * Whether an agent that is not this host's build (`reason`) is to be replaced now: once per SSH connection. One
   * still not this host's build afterwards is kept, and `outdated` says why.
   */
  mayReplace(reason: string | null): reason is string {
    if (!reason || !this.opts.ensureAgent) return false;
    if (this.replaceTried) {
      if (this.outdated === null) {
        this.outdated = `${reason}, though it was replaced on this SSH connection`;
        this.ctx.log.warn({ socket: this.ctx.socket(), outdated: true }, this.outdated);
      }
      return false;
    }
    this.replaceTried = true;
    this.ctx.log.info({ socket: this.ctx.socket(), reason }, `${reason}; replacing it`);
    return true;
  }

  /** Replaces the agent that mayReplace let go (its link closed already). */
  async replaceOutdated(reason: string): Promise<void> {
    const ensure = this.opts.ensureAgent;
    if (!ensure) return;
    this.markStart();
    try {
      await ensure(reason, true);
    } catch (err) {
      const message = (err as Error).message;
      this.outdated = `${reason}; replacing it failed: ${message}`;
      this.ctx.fail(`cannot replace the guest agent: ${message}`);
    }
  }

  /**
   * The socket takes connections but the agent behind it does not answer (hung, or stopped): it is stopped and
   * started again, at most once per HUNG_REPLACE_INTERVAL_MS (what holds the socket may not be ours to stop).
   */
  async replaceHung(why: string): Promise<void> {
    const ensure = this.opts.ensureAgent;
    if (!ensure || this.ctx.guestStopping() || performance.now() - this.lastHungReplace < HUNG_REPLACE_INTERVAL_MS)
      return;
    this.lastHungReplace = performance.now();
    this.markStart();
    const reason = `the guest agent at ${this.ctx.socket()} does not answer (${why})`;
    this.ctx.log.warn({ socket: this.ctx.socket(), reason }, `${reason}; replacing it`);
    this.ctx.fresh();
    await this.run(ensure, reason, true, 'cannot replace the guest agent that does not answer');
  }

  private markStart(): void {
    this.everStarted = true;
    this.throttleFrom = performance.now();
  }

  private async run(
    ensure: NonNullable<StartOptions['ensureAgent']>,
    reason: string,
    replace: boolean,
    failure: string,
  ): Promise<void> {
    try {
      await (replace ? ensure(reason, true) : ensure(reason));
    } catch (err) {
      this.ctx.fail(`${failure}: ${(err as Error).message}`);
    }
  }
}
