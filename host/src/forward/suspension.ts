// Forwards while the SSH connection or the guest agent's link is down: they keep their host listeners (clients get a
// quick retry) but show `suspended`, and why. Static, runtime and unix forwards need nothing but SSH, UDP ones also
// the link, whose relay carries their datagrams; detected ones follow the link and resume with its next snapshot.
// Owns why each is down; the states themselves are worked out in views.ts.
import type { ForwardSource } from '../model.js';
import type { Forward, Proto, Reason } from './forward.js';
import type { SocketLook } from './socket-look.js';

/** Why detected (and UDP) forwards still wait once SSH is back: the guest agent's link comes up after it. */
const LINK_AFTER_SSH: Reason<'link-down'> = {
  cause: 'link-down',
  text: 'agent link down: waiting for the guest agent (the SSH connection is back)',
};
/**
 * What a detected TCP forward still does while only the agent link is down: its connections are SSH channels to the
 * guest's port, which need no guest agent; what the link brings is news of ports opening and closing.
 */
const STILL_THROUGH_SSH =
  '; its connections still go through SSH, and ports opened or closed meanwhile show once it is back';

/** Why a forward that needs the guest agent's link waits (`reason`: why the link is down). */
function linkDown(reason: string): Reason<'link-down'> {
  return { cause: 'link-down', text: `agent link down: ${reason}` };
}

/** What suspension needs of the engine's forwards. */
interface Suspendable {
  forwards: () => Iterable<Forward>;
  /** Works out the forward's state again (views.ts). */
  refresh: (f: Forward) => void;
}

export class Suspension {
  /** Why SSH is down (explicit forwards created meanwhile start suspended); null while connected. */
  private sshDown: Reason<'ssh-down'> | null = null;
  /** Why the agent link is down, which static and runtime UDP forwards need too (its relay carries them). */
  private linkDown: Reason<'link-down'> | null = { cause: 'link-down', text: 'agent link not up yet' };

  constructor(private readonly deps: Suspendable) {}

  /** What a new forward starts suspended by: a detected one by nothing, as its listener was just reported. */
  of(source: ForwardSource, proto: Proto): Forward['suspended'] {
    return source === 'detected' ? null : this.explicitSuspension(proto);
  }

  /** A new agent link is up: static and runtime UDP forwards resume (detected ones with its snapshot). */
  linkUp(): void {
    this.linkDown = null;
    for (const f of this.deps.forwards()) if (f.source !== 'detected' && f.proto === 'udp') this.resume(f);
  }

  /**
   * The agent link is down: detected forwards, and UDP ones whose datagrams its relay carries, keep their host
   * listeners (clients get a quick retry) but say so.
   */
  linkLost(reason: string): void {
    for (const f of this.deps.forwards()) {
      if (f.source !== 'detected' || f.ignored) continue;
      f.suspended = this.sshDown ?? linkDown(`${reason}${f.proto === 'tcp' ? STILL_THROUGH_SSH : ''}`);
      this.deps.refresh(f);
    }
    this.udpLinkLost(reason);
  }

  /** The link closed (also before it was up, when its setup timed out): static and runtime UDP forwards wait. */
  udpLinkLost(reason: string): void {
    this.linkDown = linkDown(reason);
    for (const f of this.deps.forwards()) if (f.source !== 'detected' && f.proto === 'udp') this.resume(f);
  }

  /**
   * The SSH connection went down (a reason) or is back (null). Static, runtime and unix forwards need nothing but
   * SSH, so they follow it; detected ones follow the agent link instead (they resume with its next snapshot), but
   * while SSH is down that is their reason too: a link that went down first (its ping unanswered in a stall) is not
   * where the fault is.
   */
  setSshDown(reason: string | null): void {
    const was = this.sshDown;
    this.sshDown = reason === null ? null : { cause: 'ssh-down', text: `ssh connection down: ${reason}` };
    // SSH is back but the guest agent's link is not yet (a rebooted guest's agent takes seconds to start): what waits
    // on that link must not go on naming the lost connection, nor the link's own last reason, which was that loss.
    const back = reason === null && was !== null;
    if (back && this.linkDown !== null) this.linkDown = LINK_AFTER_SSH;
    for (const f of this.deps.forwards()) {
      if (f.ignored) continue;
      if (f.source === 'detected') {
        if (f.suspended && (this.sshDown || (back && f.suspended.cause === 'ssh-down'))) {
          f.suspended = this.sshDown ?? LINK_AFTER_SSH;
          this.deps.refresh(f);
        }
      } else if (reason === null && f.look && f.bindingKeys.length > 0) void this.resumeUnix(f, f.look);
      else this.resume(f);
    }
  }

  /**
   * SSH is back: a unix forward looks at its guest socket before it leaves `suspended`, so it does not show
   * `forwarding` for a service that stopped meanwhile.
   */
  private async resumeUnix(f: Forward, look: SocketLook): Promise<void> {
    await look.settle();
    this.resume(f); // still suspended when SSH dropped again meanwhile
  }

  /** A static, runtime or unix forward shows what keeps it from serving now, if anything (SSH; UDP: the link). */
  private resume(f: Forward): void {
    f.suspended = this.explicitSuspension(f.proto);
    this.deps.refresh(f);
  }

  private explicitSuspension(proto: Proto): Forward['suspended'] {
    return this.sshDown ?? (proto === 'udp' ? this.linkDown : null);
  }
}
