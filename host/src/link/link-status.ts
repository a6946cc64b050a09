// What the agent link says about itself while it is not up, for `status`, the boot requirements and the log: its last
// failure and when, whether it is blocked (nothing a retry or a start of the agent can fix) and by which incompatible
// agent. Owns those fields and how loudly each change is logged; the link decides when they change.
import { REMOTE_ENDED } from '@tether/protocol';
import type { Logger } from '../log.js';

/** What the wording and loudness of the reports depend on. */
export interface StatusContext {
  socket(): string;
  /** The host agent is stopping (`tether down`): what fails meanwhile is expected. */
  stopping(): boolean;
  /** Why the guest is waited for (guest-shutdown.ts); null when it is not. */
  guestStopping(): string | null;
  /** No start of the agent was tried yet, and one will be: its absence is the expected case. */
  firstStartPending(): boolean;
}

export class LinkStatus {
  /** Why the link is not up (last failure), for status and requirement details. */
  lastError: string | null = null;
  /** When lastError was last set (Date.now()). */
  lastErrorAt = 0;
  /**
   * Set while the socket is unreachable for a reason that starting the agent cannot fix (see explainOpenFailure), or
   * its agent speaks another protocol version and is not replaced (see incompatible).
   */
  blocked: string | null = null;
  /** The protocol version mismatch of the agent on the socket, while it blocks the link; null otherwise. */
  incompatible: string | null = null;

  constructor(
    private readonly log: Logger,
    private readonly ctx: StatusContext,
  ) {}

  /** The link is up: nothing is wrong. */
  up(): void {
    this.lastError = null;
    this.blocked = null;
    this.incompatible = null;
  }

  /** A new SSH connection gets sshd's current settings: whether it still refuses the channel is for it to tell. */
  newConnection(): void {
    this.blocked = null;
    this.incompatible = null;
  }

  /** A try failed with `message`; a new message is logged, as a warning unless the failure was expected. */
  failed(message: string): void {
    if (message !== this.lastError) {
      // Before the first start attempt a missing agent is the expected case that provisioning handles, not a problem.
      // Nor is what fails because the host agent is stopping (`tether down` mid-start): nothing went wrong.
      const expected = this.ctx.stopping() || this.ctx.guestStopping() !== null || this.ctx.firstStartPending();
      if (expected) this.log.info({ socket: this.ctx.socket() }, message);
      else this.log.warn({ socket: this.ctx.socket() }, message);
    }
    this.noteError(message);
  }

  /** The link is blocked by `message`; true when that is news (the link then tells its listeners). */
  block(message: string): boolean {
    if (message === this.blocked) return false;
    this.log.error({ socket: this.ctx.socket() }, message);
    this.blocked = message;
    this.noteError(message);
    return true;
  }

  /** A link that was up closed for `reason`: logs why it is down and returns it. */
  down(reason: string): string {
    const socket = this.ctx.socket();
    const guestStopping = this.ctx.guestStopping();
    const why =
      guestStopping ??
      (reason === REMOTE_ENDED ? `the guest agent ended the connection on ${socket} (it exited or restarted)` : reason);
    this.noteError(why);
    const fields = { state: 'down', reason: why, socket };
    if (guestStopping) this.log.info(fields, `agent link down: ${why}; waiting for the guest to come back`);
    else if (this.ctx.stopping())
      this.log.info(fields, `agent link down: ${why}`); // `tether down`: nothing went wrong
    else this.log.warn(fields, `agent link down: ${why}`);
    return why;
  }

  private noteError(message: string): void {
    this.lastError = message;
    this.lastErrorAt = Date.now();
  }
}
