// A unix socket forward's look at its guest socket: whether something listens there and, when channels fail, why
// (missing, stale, not the login user's to open), so the forward's state is true before a client connects. One look
// at a time per forward (a probe, or a diagnosis after a failed open), and each costs an SSH channel: failed opens
// look at most every DIAGNOSE_INTERVAL_MS. A forward showing a cause looks again when the guest agent says its
// socket changed (it watches the path); with a guest agent that cannot, by itself on a timer, backing off.
import type { Logger } from '../log.js';
import { ChannelOpenError, type SocketShell, socketOpenFailure } from '../ssh/index.js';
import type { GuestTarget } from './binding.js';
import type { Forward } from './forward.js';

/** How often a unix socket forward whose channels keep failing looks at its guest socket again. */
const DIAGNOSE_INTERVAL_MS = 5_000;
/**
 * While no client tries, a forward in error looks again by itself, backing off to this: each look is an exec channel
 * (a login shell in the guest), and a socket that never comes (docker not installed) must not cost more than that.
 */
const RECHECK_MAX_MS = 60_000;
/**
 * How long setting up a unix forward (`forward add`, start, SSH back) waits for the look at its guest socket before it
 * shows a state anyway: a stalled SSH connection must not hold `forward add` until keepalive gives up on it.
 */
const LOOK_WAIT_MS = 10_000;

/** What a look needs of its forward. */
interface LookedForward
  extends Pick<GuestTarget, 'id' | 'opened'>,
    Readonly<Pick<Forward, 'guestAddr' | 'refused' | 'suspended'>> {}

interface SocketLookDeps {
  ssh: SocketShell;
  log: Logger;
  /** The forward is to show why its channels fail from now on (null: they open). */
  show: (reason: Forward['refused']) => void;
  /** Whether the guest agent watches the socket's path (then no look runs on a timer: it says when to look). */
  watched?: () => boolean;
}

export class SocketLook {
  /** Whether the first look settled: until then the forward is not listed (`forwarding` for a socket that may not exist). */
  looked = false;
  /** The look running, joined by any other. */
  private running: Promise<void> | null = null;
  /** When the last diagnosis ended. */
  private at = Number.NEGATIVE_INFINITY;
  /** Channels opened so far: one that opens during a diagnosis says more than the diagnosis. */
  private opens = 0;
  /** The next look while the forward shows a cause (so it clears without a client trying), and its delay. */
  private recheck: NodeJS.Timeout | null = null;
  private recheckMs = DIAGNOSE_INTERVAL_MS;
  /** The failed open the last examine explained (what a timed look explains again). */
  private lastFailure: Error | null = null;
  private stopped = false;

  constructor(
    private readonly forward: LookedForward,
    private readonly deps: SocketLookDeps,
  ) {}

  /** A channel to the guest socket opened. */
  opened(): void {
    this.opens++;
  }

  /** A failed open: the guest socket is looked at, unless a look is running or one ended recently. */
  failed(err: Error): void {
    if (!(err instanceof ChannelOpenError) || this.running) return;
    if (this.forward.refused && performance.now() - this.at < DIAGNOSE_INTERVAL_MS) return;
    void this.look(() => this.examine(err));
  }

  /**
   * A unix forward just set up (or SSH back): its state waits for a probe of the guest socket, for at most
   * LOOK_WAIT_MS (the probe goes on after that and updates the state when it ends).
   */
  async settle(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LOOK_WAIT_MS);
      timer.unref();
    });
    await Promise.race([this.probe(), waited]);
    clearTimeout(timer);
    this.looked = true;
  }

  /** The guest agent saw the socket path change (it appeared, went, was replaced): look now. */
  changed(): void {
    if (this.stopped || this.forward.suspended) return;
    void this.probe();
  }

  /**
   * The guest agent no longer watches the path (its link is down, or another build answers now): a forward showing
   * a cause looks again on its own timer, or it would wait for a client to try.
   */
  unwatched(): void {
    if (this.stopped || !this.forward.refused || this.recheck || !this.lastFailure) return;
    this.recheckMs = DIAGNOSE_INTERVAL_MS;
    this.scheduleRecheck(this.lastFailure);
  }

  /** The forward is gone: no more looks of its own. */
  stop(): void {
    this.stopped = true;
    if (this.recheck) clearTimeout(this.recheck);
  }

  /** Runs `run` as the look at the guest socket, or joins the one running: one at a time. */
  private look(run: () => Promise<void>): Promise<void> {
    this.running ??= run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Why channels to the guest socket fail, from an exec channel (socketOpenFailure); the forward shows it. */
  private async examine(err: Error): Promise<void> {
    this.lastFailure = err;
    const f = this.forward;
    const opens = this.opens;
    let unlooked = false;
    const reason = await socketOpenFailure(this.deps.ssh, f.guestAddr, err).then(
      (failure): Forward['refused'] =>
        failure && { cause: failure.serviceDown ? 'service-down' : 'guest-socket', text: failure.message },
      (e: Error): Forward['refused'] => {
        this.deps.log.debug(
          { forward: f.id, err: e.message },
          `cannot look at guest socket ${f.guestAddr}: ${e.message}`,
        );
        unlooked = true;
        // No news keeps what it shows; but a channel failed, so nothing shown yet is not `forwarding` either (the
        // look fails where sshd has no session left for it: mounts hold them under a low MaxSessions).
        return f.refused ?? { cause: 'guest-socket', text: `${err.message} (looking at why failed: ${e.message})` };
      },
    );
    this.at = performance.now();
    // A channel that opened meanwhile says more than the look did.
    if (this.opens === opens) this.deps.show(reason);
    if (f.refused) this.scheduleRecheck(err, unlooked);
  }

  /**
   * Opens a channel to the guest socket and closes it at once, as a client's connect and close would: a listening
   * socket sees one connection that ends without a byte (harmless for docker.sock and the like, which serve one
   * request per connection anyway). When the open fails, the socket is examined for why. Joins a running look.
   */
  private probe(): Promise<void> {
    return this.look(async () => {
      let channel: { destroy(): void };
      try {
        channel = await this.deps.ssh.openStreamLocal(this.forward.guestAddr);
      } catch (err) {
        // Not connected: the forward is suspended, and looks again once SSH is back.
        if (err instanceof ChannelOpenError) await this.examine(err);
        return;
      }
      channel.destroy();
      this.forward.opened(null);
    });
  }

  /**
   * A forward still showing a cause looks again later, backing off while it keeps showing one. `unlooked`: the last
   * look could not run, so the timer serves even where the guest agent watches the path (nothing there may change).
   */
  private scheduleRecheck(err: Error, unlooked = false): void {
    if (this.recheck) clearTimeout(this.recheck);
    this.recheck = null;
    // Each timed look is an SSH session in the guest's logs, for as long as the socket stays away.
    if (!unlooked && this.deps.watched?.()) return;
    this.recheck = setTimeout(() => {
      this.recheck = null;
      if (!this.forward.refused || this.stopped) {
        this.recheckMs = DIAGNOSE_INTERVAL_MS;
        return;
      }
      this.recheckMs = Math.min(this.recheckMs * 2, RECHECK_MAX_MS);
      if (!unlooked && this.deps.watched?.()) return;
      // While SSH is down there is nothing to look at: wait for it.
      if (this.forward.suspended) this.scheduleRecheck(err, unlooked);
      // Not through failed(): its rate limit is this timer's own interval, which a timer can undercut by a fraction
      // of a millisecond, and a recheck skipped there would never be scheduled again.
      else void this.look(() => this.examine(err));
    }, this.recheckMs);
    this.recheck.unref();
  }
}
