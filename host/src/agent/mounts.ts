// Adapts the mount manager (host/src/mount/) to the agent's MountDriver seam: requirement 5 checks the guest's mount
// requirements and mounts (when they are not met, it fails and checks again in the background until they are);
// afterwards SSH drops suspend the mounts and reconnects resume them, with host file events sent over whichever agent
// link is current. Owns only this wiring.
import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import type { Client } from 'ssh2';
import type { MountConfig } from '../config/schema.js';
import type { AgentLink } from '../link/index.js';
import { componentLogger, type Logger } from '../log.js';
import type { MountView } from '../model.js';
import { MountManager } from '../mount/index.js';
import type { SshSession } from '../ssh/index.js';
import type { MountDriver } from './host-agent.js';

/** How long requirement 5 gives a mount whose first attempt failed to succeed on a retry (the first come at ~1, 3, 7 s). */
const RETRY_GRACE_MS = 10_000;
/** Unmet guest requirements (sshfs missing...) are checked again after this, doubling up to RECHECK_MAX_MS. */
const RECHECK_MIN_MS = 5_000;
const RECHECK_MAX_MS = 60_000;

/**
 * Resolves with the mounts still not mounted once all are, or after `graceMs`; an attempt still running then is
 * waited for rather than cut off (the `up` timeout bounds it).
 */
function untilMounted(
  manager: MountManager,
  listeners: ((view: MountView) => void)[],
  graceMs: number,
): Promise<MountView[]> {
  const missing = () => manager.views().filter((v) => v.state !== 'mounted');
  if (missing().length === 0) return Promise.resolve([]);
  return new Promise((resolve) => {
    let expired = false;
    const check = () => {
      const left = missing();
      if (left.length > 0 && (!expired || left.some((v) => v.state === 'mounting'))) return;
      clearTimeout(timer);
      const at = listeners.indexOf(check);
      if (at >= 0) listeners.splice(at, 1);
      resolve(left);
    };
    const timer = setTimeout(() => {
      expired = true;
      check();
    }, graceMs);
    listeners.push(check);
  });
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

export function mountDriver(mounts: readonly MountConfig[], logger: Logger): MountDriver {
  return new Mounts(mounts, logger);
}

class Mounts implements MountDriver {
  private readonly listeners: ((view: MountView) => void)[] = [];
  private readonly manager: MountManager;
  private readonly log: Logger;
  private ssh: SshSession | null = null;
  private notify: (batch: FsEvents) => boolean = () => false;
  /** The mounts were started: from then on the manager mounts, retries and follows the connection by itself. */
  private begun = false;
  private stopped = false;
  /** What the guest lacked at the last check, while the mounts wait for it (not begun). */
  private unmetReason: string | null = null;
  private recheckTimer: NodeJS.Timeout | undefined;

  constructor(mounts: readonly MountConfig[], logger: Logger) {
    this.manager = new MountManager(mounts, {
      logger,
      onChange: (view) => {
        for (const l of [...this.listeners]) l(view); // a listener may remove itself
      },
    });
    this.log = componentLogger(logger, 'mount');
  }

  async start(ssh: SshSession, link: AgentLink): Promise<string | null> {
    this.ssh = ssh;
    this.notify = (batch) => link.peer?.notify('fs.events', batchFor(batch, link.info?.caps ?? [])) ?? false;
    // From the start, so a drop while the first mount or the watchers' first scan runs is not missed.
    ssh.on('disconnected', this.onDown);
    ssh.on('connected', this.onUp);
    let client: Client;
    try {
      client = await ssh.waitConnected();
    } catch (err) {
      const reason = `ssh: ${(err as Error).message}`;
      this.wait(reason, RECHECK_MIN_MS);
      throw new Error(reason);
    }
    return this.mountNow(client);
  }

  async retry(): Promise<string | null> {
    if (this.stopped || !this.ssh) throw new Error('the mounts are not running');
    // Started before: the manager has the mounts; what failed is tried now instead of at its next backoff step.
    if (this.begun) this.manager.retryNow();
    return this.mountNow(this.ssh.client);
  }

  views(): MountView[] {
    return this.manager.views();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.recheckTimer);
    this.ssh?.off('disconnected', this.onDown);
    this.ssh?.off('connected', this.onUp);
    await this.manager.stop();
  }

  onChange(listener: (view: MountView) => void): void {
    this.listeners.push(listener);
  }

  private readonly onDown = (reason: string): void => {
    if (this.begun) this.manager.suspend(`ssh connection lost: ${reason}`);
  };

  private readonly onUp = (): void => {
    const client = this.ssh?.client;
    if (this.begun) {
      if (client) void this.manager.resume(client, this.notify);
    } else if (this.unmetReason !== null) {
      this.wait(this.unmetReason, RECHECK_MIN_MS); // a new connection may be to a fixed guest: look again soon
    }
  };

  /** What the guest lacks for mounting (one line), or null; a check that fails says so. */
  private async unmetRequirements(client: Client): Promise<string | null> {
    try {
      const failed = (await this.manager.checkRequirements(client)).filter((r) => !r.ok);
      return failed.length > 0 ? failed.map((r) => `${r.name}: ${r.detail}`).join('; ') : null;
    } catch (err) {
      return `checking the guest's mount requirements failed: ${(err as Error).message}`;
    }
  }

  /**
   * Checks the guest's requirements (until the mounts were started once) and mounts; resolves with a summary once
   * every mount is up, rejects with what is missing (the mounts go on waiting or retrying by themselves).
   */
  private async mountNow(client: Client | null): Promise<string> {
    if (!this.begun) {
      const unmet = client ? await this.unmetRequirements(client) : (this.unmetReason ?? 'ssh is not connected');
      if (this.stopped) throw new Error('the agent stopped before mounting');
      // A background recheck may have found everything met and started the mounts meanwhile.
      if (!this.begun && (unmet !== null || !client)) {
        this.wait(unmet ?? 'ssh is not connected', RECHECK_MIN_MS);
        throw new Error(unmet ?? 'ssh is not connected');
      }
      if (client) await this.begin(client);
    }
    const missing = await untilMounted(this.manager, this.listeners, RETRY_GRACE_MS);
    const views = this.manager.views();
    const errors = views.filter((v) => v.error).map((v) => `${v.mountPoint}: ${v.error}`);
    const summary = `${views.length - missing.length} of ${views.length} mounted${errors.length ? `; ${errors.join('; ')}` : ''}`;
    // The manager keeps retrying, but `up` must not report ready with a mount the user asked for missing.
    if (missing.length > 0) throw new Error(summary);
    return summary;
  }

  /** Mounts everything, once. */
  private async begin(client: Client): Promise<void> {
    if (this.begun || this.stopped) return;
    this.begun = true;
    this.unmetReason = null;
    clearTimeout(this.recheckTimer);
    // Requirement 5 is about the mounts; a watcher still scanning a large tree shows `inotify: off` meanwhile.
    await this.manager.start(client, this.notify, { awaitWatchers: false });
  }

  /**
   * The guest lacks something (sshfs not installed yet, a host directory not created yet): the mounts show why, and
   * the requirements are checked again after `delay` (doubling to RECHECK_MAX_MS), mounting once nothing is missing,
   * so fixing it needs no `tether up` again.
   */
  private wait(reason: string, delay: number): void {
    if (this.stopped || this.begun) return;
    if (reason !== this.unmetReason) this.log.warn({ unmet: reason }, `mounts wait: ${reason}`);
    this.unmetReason = reason;
    this.manager.unmet(reason);
    clearTimeout(this.recheckTimer);
    this.recheckTimer = setTimeout(() => void this.recheck(delay), delay);
    this.recheckTimer.unref();
  }

  private async recheck(delay: number): Promise<void> {
    if (this.stopped || this.begun) return;
    const client = this.ssh?.client ?? null;
    const unmet = client ? await this.unmetRequirements(client) : this.unmetReason;
    if (this.stopped || this.begun) return;
    if (client && unmet === null) {
      this.log.info('the guest meets the mount requirements now; mounting');
      await this.begin(client).catch((err: Error) =>
        this.log.error({ err: err.message }, `mounting failed: ${err.message}`),
      );
      return;
    }
    this.wait(unmet ?? 'ssh is not connected', Math.min(delay * 2, RECHECK_MAX_MS));
  }
}
