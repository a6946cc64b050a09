// Adapts the mount manager (host/src/mount/) to the agent's MountDriver seam: requirement 5 checks the guest's mount
// requirements and mounts; afterwards SSH drops suspend the mounts and reconnects resume them, with host file events
// sent over whichever agent link is current. Owns only this wiring.
import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import type { MountConfig } from '../config/schema.js';
import type { AgentLink } from '../link/index.js';
import type { Logger } from '../log.js';
import type { MountView } from '../model.js';
import { MountManager } from '../mount/index.js';
import type { SshSession } from '../ssh/index.js';
import type { MountDriver } from './host-agent.js';

/** How long requirement 5 gives a mount whose first attempt failed to succeed on a retry (the first come at ~1, 3, 7 s). */
const RETRY_GRACE_MS = 10_000;

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
  let detach: (() => void) | null = null;
  return {
    async start(ssh: SshSession, link: AgentLink) {
      const notify = (batch: FsEvents) =>
        link.peer?.notify('fs.events', batchFor(batch, link.info?.caps ?? [])) ?? false;
      const client = await ssh.waitConnected();
      const failed = (await manager.checkRequirements(client)).filter((r) => !r.ok);
      if (failed.length > 0) throw new Error(failed.map((r) => `${r.name}: ${r.detail}`).join('; '));
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
      detach?.();
      await manager.stop();
    },
    onChange: (listener) => listeners.push(listener),
  };
}
