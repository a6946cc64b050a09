// A guest that said it shuts down (its agent's agent.bye with systemStopping): how long the link waits for it instead
// of starting its agent again, and whether a guest that takes logins again booted since its goodbye. Owns only that
// wait; the link decides what the wait holds back.
import type { AgentBye } from '@tether/protocol';
import { guestText } from '../inert-text.js';
import type { Logger } from '../log.js';
import type { ExecResult } from '../ssh/index.js';

/** Why the link is down while the guest agent's last message said the guest shuts down (status: link.lastError). */
export const GUEST_STOPPING = 'the guest is shutting down';

/**
 * How long a guest that said it shuts down is waited for before its agent is started again as for any lost link: a
 * reboot of a slow VM (TCG) takes a minute or two; a guest that stays down needs nothing started meanwhile anyway.
 */
const GUEST_STOPPING_WAIT_MS = 5 * 60_000;
/** How long the look at a reconnected guest's uptime may take (rebooted); a login shell on a slow VM is slow. */
const REBOOT_CHECK_TIMEOUT_MS = 20_000;

/**
 * Whether /proc/uptime's text says the guest booted less than `elapsedMs` ago. Its last line: a login shell may print
 * before it.
 */
export function bootedSince(procUptime: string, elapsedMs: number): boolean {
  const last = procUptime.trim().split('\n').pop() ?? '';
  const seconds = Number.parseFloat(last.trim().split(/\s+/)[0] ?? '');
  return Number.isFinite(seconds) && seconds >= 0 && seconds * 1000 < elapsedMs;
}

export class GuestShutdown {
  private reason: string | null = null;
  /**
   * Date.now() of the goodbye that set `reason`: compared with the guest's uptime, which goes on while the host
   * sleeps (performance.now() does not).
   */
  private since = 0;
  /** performance.now() until which the guest is waited for (GUEST_STOPPING_WAIT_MS). */
  private until = 0;

  constructor(private readonly log: Logger) {}

  /**
   * Set when the guest agent's last message said the guest is shutting down: until an agent answers again (clear),
   * for at most GUEST_STOPPING_WAIT_MS. An SSH reconnect alone does not end it (sshd may still take logins in a guest
   * that is going down); one to a guest that booted since does (rebooted).
   */
  get stopping(): string | null {
    if (this.reason !== null && performance.now() > this.until) this.reason = null;
    return this.reason;
  }

  /** The guest agent's last message; true when it says the guest is shutting down (the wait starts). */
  noteBye(bye: AgentBye): boolean {
    const reason = guestText(bye.reason);
    this.log.info({ reason }, `guest agent stopping: ${reason}`);
    if (!bye.systemStopping) return false;
    this.reason = GUEST_STOPPING;
    this.since = Date.now();
    this.until = performance.now() + GUEST_STOPPING_WAIT_MS;
    return true;
  }

  /** An agent answers again: nothing to wait for. */
  clear(): void {
    this.reason = null;
  }

  /**
   * On a new SSH connection while a goodbye is remembered: true when the guest booted since it (its uptime is
   * shorter), which ends the wait. A VM whose disk is reset at stop comes back without the agent, and only the link
   * starting it (provisioning) brings forwards and mounts back. `stillWanted` says whether the answer still matters
   * once the guest's uptime is read.
   */
  async rebooted(
    shell: { execText(command: string, timeoutMs: number): Promise<ExecResult> },
    stillWanted: () => boolean,
  ): Promise<boolean> {
    if (this.reason === null) return false;
    let uptime: string;
    try {
      uptime = (await shell.execText('cat /proc/uptime', REBOOT_CHECK_TIMEOUT_MS)).stdout;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'cannot read the guest uptime; waiting for the guest agent');
      return false;
    }
    if (!stillWanted() || this.reason === null) return false;
    if (!bootedSince(uptime, Date.now() - this.since)) return false;
    this.log.info('the guest booted again since it said it shuts down; no longer waiting for its agent');
    this.reason = null;
    return true;
  }
}
