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
  const listeners: ((view: MountView) => void)[] = [];
  const manager = new MountManager(mounts, {
    logger,
    onChange: (view) => {
      for (const l of [...listeners]) l(view); // a listener may remove itself
    },
  });
  let notify: (batch: FsEvents) => boolean = () => false;
  let detach: (() => void) | null = null;
  let recheck: NodeJS.Timeout | undefined;
  let stopped = false;
  const log = componentLogger(logger, 'mount');

  /** What the guest lacks for mounting (one line), or null. */
  const unmetRequirements = async (client: Client): Promise<string | null> => {
    const failed = (await manager.checkRequirements(client)).filter((r) => !r.ok);
    return failed.length > 0 ? failed.map((r) => `${r.name}: ${r.detail}`).join('; ') : null;
  };

  /** Mounts everything; from then on SSH drops suspend the mounts and reconnects resume them. */
  const begin = async (ssh: SshSession, client: Client) => {
    await manager.start(client, notify);
    const onDown = (reason: string) => manager.suspend(`ssh connection lost: ${reason}`);
    const onUp = () => {
      if (ssh.client) void manager.resume(ssh.client, notify);
    };
    ssh.on('disconnected', onDown);
    ssh.on('connected', onUp);
    detach = () => {
      ssh.off('disconnected', onDown);
      ssh.off('connected', onUp);
    };
  };

  /**
   * While the guest lacks something (sshfs not installed yet, a host directory not created yet), checks again with
   * backoff and mounts once nothing is missing: fixing it needs no `tether up` again.
   */
  const recheckLater = (ssh: SshSession, delay: number, last: string) => {
    recheck = setTimeout(async () => {
      const client = ssh.client;
      const found = client
        ? await unmetRequirements(client).catch(
            (err: Error) => `checking the guest's mount requirements failed: ${err.message}`,
          )
        : last;
      if (stopped) return;
      if (client && found === null) {
        log.info('the guest meets the mount requirements now; mounting');
        await begin(ssh, client).catch((err: Error) =>
          log.error({ err: err.message }, `mounting failed: ${err.message}`),
        );
        return;
      }
      const unmet = found ?? last;
      if (unmet !== last) {
        manager.unmet(unmet);
        log.warn({ unmet }, `mounts wait: ${unmet}`);
      }
      recheckLater(ssh, Math.min(delay * 2, RECHECK_MAX_MS), unmet);
    }, delay);
    recheck.unref();
  };

  return {
    async start(ssh: SshSession, link: AgentLink) {
      notify = (batch: FsEvents) => link.peer?.notify('fs.events', batchFor(batch, link.info?.caps ?? [])) ?? false;
      const client = await ssh.waitConnected();
      const unmet = await unmetRequirements(client);
      if (unmet !== null) {
        manager.unmet(unmet);
        recheckLater(ssh, RECHECK_MIN_MS, unmet);
        throw new Error(unmet);
      }
      await begin(ssh, client);
      const missing = await untilMounted(manager, listeners, RETRY_GRACE_MS);
      const total = manager.views().length;
      const errors = manager
        .views()
        .filter((v) => v.error)
        .map((v) => `${v.mountPoint}: ${v.error}`);
      const summary = `${total - missing.length} of ${total} mounted${errors.length ? `; ${errors.join('; ')}` : ''}`;
      // The manager keeps retrying, but `up` must not report ready with a mount the user asked for missing.
      if (missing.length > 0) throw new Error(summary);
      return summary;
    },
    views: () => manager.views(),
    async stop() {
      stopped = true;
      clearTimeout(recheck);
      detach?.();
      await manager.stop();
    },
    onChange: (listener) => listeners.push(listener),
  };
}
