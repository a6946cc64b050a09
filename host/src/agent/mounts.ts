// Adapts the mount manager (host/src/mount/) to the agent's AgentMounts seam: requirement 5 checks the guest's mount
// requirements and mounts, each mount on its own: those whose requirements are met are mounted, the others show what
// they lack and are checked again in the background until they can be mounted (requirement 5 fails meanwhile).
// Afterwards SSH drops suspend the started mounts and reconnects resume them, with host file events sent over
// whichever agent link is current. Owns only this wiring.
import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import type { Client } from 'ssh2';
import type { MountConfig } from '../config/schema.js';
import { type AgentLink, GUEST_STOPPING } from '../link/index.js';
import { componentLogger, type Logger } from '../log.js';
import { CONFIG_ONLY_CAUSES, type MountCause, type MountView } from '../model.js';
import { MountManager, type MountRequirement, mountPointElsewhere } from '../mount/index.js';
import type { SshSession } from '../ssh/index.js';
import type { AgentMounts } from './host-agent.js';

/** How long requirement 5 gives a mount whose first attempt failed to succeed on a retry (the first come at ~1, 3, 7 s). */
const RETRY_GRACE_MS = 10_000;
/** Unmet guest requirements (sshfs missing...) are checked again after this, doubling up to RECHECK_MAX_MS. */
const RECHECK_MIN_MS = 5_000;
const RECHECK_MAX_MS = 60_000;

/**
 * Resolves once every started mount is mounted, or after `graceMs`; an attempt still running then is waited for rather
 * than cut off (the `up` timeout bounds it). Mounts held by their requirements are not waited for.
 */
function untilMounted(manager: MountManager, listeners: ((view: MountView) => void)[], graceMs: number): Promise<void> {
  const missing = () => {
    const held = new Set(manager.waiting());
    return manager.views().filter((v, i) => !held.has(i) && v.state !== 'mounted');
  };
  if (missing().length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    let expired = false;
    const check = () => {
      const left = missing();
      if (left.length > 0 && (!expired || left.some((v) => v.state === 'mounting'))) return;
      clearTimeout(timer);
      const at = listeners.indexOf(check);
      if (at >= 0) listeners.splice(at, 1);
      resolve();
    };
    const timer = setTimeout(() => {
      expired = true;
      check();
    }, graceMs);
    listeners.push(check);
  });
}

/** Why a held mount waits: every unmet requirement's line, and the cause it shows. */
interface Unmet {
  reason: string;
  cause: MountCause | null;
}

/**
 * The cause a mount held by several unmet requirements shows: the first, unless a later one only tether.yaml fixes,
 * since nothing else gets it mounted until that is changed.
 */
export function firstCause(had: MountCause | null, next: MountCause | null): MountCause | null {
  const configOnly = (c: MountCause | null) => c !== null && CONFIG_ONLY_CAUSES.has(c);
  return configOnly(next) && !configOnly(had) ? next : had;
}

/** `N of M mounted`, then each reason with the mount points it keeps out (a reason shared by several, once). */
export function mountSummary(views: readonly MountView[]): string {
  const mounted = views.filter((v) => v.state === 'mounted').length;
  const byReason = new Map<string, string[]>();
  for (const v of views) if (v.error) byReason.set(v.error, [...(byReason.get(v.error) ?? []), v.mountPoint]);
  const reasons = [...byReason].map(([reason, points]) => `${points.join(', ')}: ${reason}`);
  return `${mounted} of ${views.length} mounted${reasons.length ? `; ${reasons.join('; ')}` : ''}`;
}

/**
 * Why the mounts keep the agent from `ready`. A lost SSH connection (or a guest going down) suspends every mount, one
 * change at a time: a count taken at the first ("1 of 2 mounted") would blame the mounts, so that cause is named.
 */
export function mountsDegradedReason(views: readonly MountView[]): string {
  const lost = views.find((v) => v.state === 'suspended' && (v.cause === 'ssh-down' || v.cause === 'guest-stopping'));
  return lost?.error ?? mountSummary(views);
}

/**
 * Why the default mount of ~ is not made, and what comes of it: tried again by itself, unless what keeps it out only
 * tether.yaml changes (its mount point would hide the SSH user's home: the same user name on host and guest).
 */
export function defaultMountSkipped(reason: string, views: readonly MountView[]): string {
  // A guest directory of another user's (/root, for a host agent run as root) does not become the SSH user's by itself.
  const stays = views.some(
    (v) => v.cause !== null && (CONFIG_ONLY_CAUSES.has(v.cause) || v.cause === 'mount-point-taken'),
  );
  const retry = stays ? '' : 'it is tried again by itself; ';
  // The default mount has no entry in tether.yaml to edit: the fix is a whole `mounts:` line.
  const point = views[0]?.mountPoint ?? '';
  const elsewhere = point.startsWith('/') ? mountPointElsewhere(point) : '~/host';
  const how = reason.includes("set the mount's mountPoint")
    ? 'for the default mount, that is'
    : 'to mount it elsewhere, put';
  return (
    `the default mount of ~ is not made: ${reason}; ${retry}${how} ` +
    `\`mounts: [{location: "~", mountPoint: "${elsewhere}"}]\` in tether.yaml (\`mounts: []\` for none)`
  );
}

/**
 * The batch as a guest agent with `caps` takes it: one from before the marker touch would refuse the field as hostile
 * input, so it gets the batch without it and touches with the current time, as it always did.
 */
export function batchFor(batch: FsEvents, caps: readonly string[]): FsEvents {
  if (batch.markerTouch === undefined || caps.includes(CAP_MARKER_TOUCH)) return batch;
  const { markerTouch: _, ...plain } = batch;
  return plain;
}

/** `optional`: the default mount of ~, which the instance is ready without (its failures are warnings). */
export function agentMounts(mounts: readonly MountConfig[], logger: Logger, optional = false): AgentMounts {
  return new ManagedMounts(mounts, logger, optional);
}

/** How often a remount held back for a guest that said it shuts down looks whether the link stopped waiting. */
const HELD_CHECK_MS = 5_000;

class ManagedMounts implements AgentMounts {
  private readonly listeners: ((view: MountView) => void)[] = [];
  private readonly manager: MountManager;
  private readonly log: Logger;
  private ssh: SshSession | null = null;
  private link: AgentLink | null = null;
  /** An SSH reconnect came while the guest was shutting down: the remount waits for the guest agent (onLinkUp). */
  private remountHeld = false;
  private heldTimer: NodeJS.Timeout | undefined;
  private notify: (batch: FsEvents) => boolean = () => false;
  /** Whether the guest agent now linked takes `markerTouch` (see batchFor). */
  private guestAppliesMarker: () => boolean = () => true;
  private stopped = false;
  private recheckTimer: NodeJS.Timeout | undefined;
  /** The next background check of held mounts' requirements comes after this; doubles up to RECHECK_MAX_MS. */
  private recheckMs = RECHECK_MIN_MS;

  constructor(mounts: readonly MountConfig[], logger: Logger, optional: boolean) {
    this.manager = new MountManager(mounts, {
      logger,
      optional,
      onChange: (view) => {
        for (const l of [...this.listeners]) l(view); // a listener may remove itself
      },
      guestAppliesMarker: () => this.guestAppliesMarker(),
    });
    this.log = componentLogger(logger, 'mount');
  }

  async start(ssh: SshSession, link: AgentLink): Promise<string | null> {
    this.ssh = ssh;
    this.notify = (batch) => link.peer?.notify('fs.events', batchFor(batch, link.info?.caps ?? [])) ?? false;
    this.guestAppliesMarker = () => (link.info?.caps ?? []).includes(CAP_MARKER_TOUCH);
    // From the start, so a drop while the first mount or the watchers' first scan runs is not missed.
    ssh.on('disconnected', this.onDown);
    ssh.on('connected', this.onUp);
    ssh.on('state', this.onSshState);
    this.link = link;
    link.on('guest-stopping', this.onGuestStopping);
    link.on('guest-rebooted', this.onGuestRebooted);
    link.on('up', this.onLinkUp);
    let client: Client;
    try {
      client = await ssh.waitConnected();
    } catch (err) {
      const reason = `ssh: ${(err as Error).message}`;
      this.holdAll(reason);
      throw new Error(reason);
    }
    return this.mountNow(client);
  }

  async retry(): Promise<string | null> {
    if (this.stopped || !this.ssh) throw new Error('the mounts are not running');
    // The started mounts that failed are tried now instead of at their next backoff step, after what they need in the
    // guest is fixed again; held ones are checked now.
    const client = this.ssh.client;
    const views = this.manager.views();
    const failed = this.started().filter((i) => views[i].state === 'error');
    if (client && failed.length > 0) await this.refix(client, failed);
    this.manager.retryNow();
    return this.mountNow(this.ssh.client);
  }

  views(): MountView[] {
    return this.manager.views();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.recheckTimer);
    clearInterval(this.heldTimer);
    this.ssh?.off('disconnected', this.onDown);
    this.ssh?.off('connected', this.onUp);
    this.ssh?.off('state', this.onSshState);
    this.link?.off('guest-stopping', this.onGuestStopping);
    this.link?.off('guest-rebooted', this.onGuestRebooted);
    this.link?.off('up', this.onLinkUp);
    await this.manager.stop();
  }

  onChange(listener: (view: MountView) => void): void {
    this.listeners.push(listener);
  }

  private readonly onGuestStopping = (): void => {
    this.manager.pause(this.link?.guestStopping ?? GUEST_STOPPING);
  };

  /**
   * The guest that said it shuts down has booted since: a remount held back at the reconnect runs now, not at the
   * next HELD_CHECK_MS look (it would say `the guest is shutting down` until then).
   */
  private readonly onGuestRebooted = (): void => {
    if (this.remountHeld) this.onLinkUp();
  };

  private holdRemount(): void {
    this.remountHeld = true;
    clearInterval(this.heldTimer);
    this.heldTimer = setInterval(() => {
      if (this.link?.guestStopping && !this.stopped) return;
      clearInterval(this.heldTimer);
      this.onLinkUp();
    }, HELD_CHECK_MS);
    this.heldTimer.unref();
  }

  /**
   * The guest agent answers again: the guest is back from its shutdown (or did not go down after all). A remount held
   * back at the reconnect runs now.
   */
  private readonly onLinkUp = (): void => {
    clearInterval(this.heldTimer);
    const client = this.ssh?.client;
    if (this.stopped) return;
    if (this.remountHeld && client) {
      this.remountHeld = false;
      void this.remount(client);
    } else this.manager.unpause();
  };

  /** SSH closed for good (a changed host key, a refused login): mounts wait for what the user must fix, and say it. */
  private readonly onSshState = (state: string, reason: string | null): void => {
    if (state === 'closed' && reason && !this.stopped) this.manager.suspend(`ssh connection closed: ${reason}`);
  };

  private readonly onDown = (reason: string): void => {
    this.manager.suspend(`ssh connection lost: ${reason}`);
  };

  private readonly onUp = (): void => {
    const client = this.ssh?.client;
    // sshd may take logins in a guest that is still going down: the remount waits for its agent to answer, or for
    // the link to stop waiting for the guest (then the mounts do not wait on an agent that may never come).
    if (client && this.link?.guestStopping) {
      this.manager.pause(this.link.guestStopping);
      this.holdRemount();
    } else if (client) void this.remount(client);
    // A new connection may be to a fixed guest: held mounts look again soon.
    if (this.manager.waiting().length > 0) this.scheduleRecheck(RECHECK_MIN_MS);
  };

  /**
   * After a reconnect. The guest may have been reset or rebuilt meanwhile (a VM whose disk is thrown away at stop):
   * what the first mount had fixed (user_allow_other, mount points made with sudo) is fixed again first.
   */
  private async remount(client: Client): Promise<void> {
    this.manager.remounting();
    await this.refix(client, this.started());
    if (this.stopped || this.ssh?.client !== client) return;
    await this.manager.resume(client, this.notify);
  }

  /** Checks (and fixes with sudo where allowed) the guest requirements of started mounts; logs what is still unmet. */
  private async refix(client: Client, which: readonly number[]): Promise<void> {
    if (which.length === 0) return;
    try {
      const mountedByAgent = new Set(
        this.manager
          .views()
          .filter((v) => v.state === 'mounted')
          .map((v) => v.mountPoint),
      );
      for (const r of await this.manager.checkRequirements(client, { only: which, mountedByAgent })) {
        if (!r.ok) this.log.warn({ requirement: r.name }, `mount requirement not met: ${r.name}: ${r.detail}`);
        else this.noteFixed(r);
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, `checking the guest's mount requirements failed`);
    }
  }

  /** A requirement met by changing the guest with sudo (a line in /etc/fuse.conf, a mount point): always logged. */
  private noteFixed(r: MountRequirement): void {
    if (r.changedGuest) this.log.info({ requirement: r.name }, `${r.name}: ${r.detail}`);
  }

  /** Indices of the mounts started (mounted, retried and followed across reconnects). */
  private started(): number[] {
    const waiting = new Set(this.manager.waiting());
    return this.manager.mounts.map((_, i) => i).filter((i) => !waiting.has(i));
  }

  /**
   * Starts the held mounts whose requirements are met now; resolves with a summary once every mount is up, rejects
   * with what keeps which mount out (they go on waiting or retrying by themselves).
   */
  private async mountNow(client: Client | null): Promise<string> {
    await this.admit(client, RECHECK_MIN_MS);
    if (this.stopped) throw new Error('the agent stopped before mounting');
    await untilMounted(this.manager, this.listeners, RETRY_GRACE_MS);
    const views = this.manager.views();
    const summary = mountSummary(views);
    // The manager keeps retrying, but `up` must not report ready with a mount the user asked for missing.
    if (views.some((v) => v.state !== 'mounted')) throw new Error(summary);
    return summary;
  }

  /**
   * Checks the requirements of the mounts not started yet and starts those that meet them; the others show what they
   * lack (a requirement every mount needs, such as sshfs, holds them all) and are checked again after `recheckMs`,
   * so fixing it needs no `tether up` again.
   */
  private async admit(client: Client | null, recheckMs: number): Promise<void> {
    const waiting = this.manager.waiting();
    if (waiting.length === 0 || this.stopped) return;
    if (!client || this.link?.guestStopping) {
      // Nothing to look at (a guest going down answers commands late or not at all): what a held mount showed still
      // stands.
      const views = this.manager.views();
      const [why, cause]: [string, MountCause] = client
        ? [this.link?.guestStopping ?? GUEST_STOPPING, 'guest-stopping']
        : ['ssh is not connected', 'ssh-down'];
      for (const i of waiting) if (!views[i].error) this.manager.hold(i, why, cause);
      this.scheduleRecheck(recheckMs);
      return;
    }
    const unmet = await this.unmetRequirements(client, waiting);
    if (this.stopped) return;
    for (const [i, { reason, cause }] of unmet) this.manager.hold(i, reason, cause);
    if (unmet.size > 0) this.scheduleRecheck(recheckMs);
    const ready = waiting.filter((i) => !unmet.has(i));
    if (ready.length === 0) return;
    const points = ready.map((i) => this.manager.views()[i].mountPoint);
    this.log.info({ mountPoints: points }, `mount requirements met for ${points.join(', ')}; mounting`);
    // Requirement 5 is about the mounts; a watcher still scanning a large tree shows `inotify: off` meanwhile.
    await this.manager.start(client, this.notify, { awaitWatchers: false, which: ready });
  }

  /** What each of the `waiting` mounts lacks (one line each, and its cause); mounts that lack nothing are left out. */
  private async unmetRequirements(client: Client, waiting: readonly number[]): Promise<Map<number, Unmet>> {
    const unmet = new Map<number, Unmet>();
    const add = (i: number, why: string, cause: MountCause | null) => {
      const had = unmet.get(i);
      unmet.set(
        i,
        had ? { reason: `${had.reason}; ${why}`, cause: firstCause(had.cause, cause) } : { reason: why, cause },
      );
    };
    try {
      for (const r of await this.manager.checkRequirements(client, { only: waiting })) {
        if (!r.ok) for (const i of r.mounts ?? waiting) add(i, `${r.name}: ${r.detail}`, r.cause ?? null);
        else this.noteFixed(r);
      }
    } catch (err) {
      const why = `checking the guest's mount requirements failed: ${(err as Error).message}`;
      for (const i of waiting) add(i, why, 'guest-unchecked');
    }
    return unmet;
  }

  private holdAll(reason: string): void {
    for (const i of this.manager.waiting()) this.manager.hold(i, reason, 'ssh-down');
    this.scheduleRecheck(RECHECK_MIN_MS);
  }

  private scheduleRecheck(delay: number): void {
    if (this.stopped) return;
    this.recheckMs = delay;
    clearTimeout(this.recheckTimer);
    this.recheckTimer = setTimeout(() => void this.recheck(), delay);
    this.recheckTimer.unref();
  }

  private async recheck(): Promise<void> {
    const next = Math.min(this.recheckMs * 2, RECHECK_MAX_MS);
    await this.admit(this.ssh?.client ?? null, next).catch((err: Error) =>
      this.log.error({ err: err.message }, `mounting failed: ${err.message}`),
    );
  }
}
