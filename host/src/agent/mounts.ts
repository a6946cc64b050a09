// Adapts the mount manager (host/src/mount/) to the agent's MountDriver seam: requirement 5 checks the guest's mount
// requirements and mounts; afterwards SSH drops suspend the mounts and reconnects resume them, with host file events
// sent over whichever agent link is current. Owns only this wiring.
import type { FsEvents } from '@tether/protocol';
import type { MountConfig } from '../config/schema.js';
import type { AgentLink } from '../link/index.js';
import type { Logger } from '../log.js';
import type { MountView } from '../model.js';
import { MountManager } from '../mount/index.js';
import type { SshSession } from '../ssh/index.js';
import type { MountDriver } from './host-agent.js';

export function mountDriver(mounts: readonly MountConfig[], logger: Logger): MountDriver {
  const listeners: ((view: MountView) => void)[] = [];
  const manager = new MountManager(mounts, {
    logger,
    onChange: (view) => {
      for (const l of listeners) l(view);
    },
  });
  let detach: (() => void) | null = null;
  return {
    async start(ssh: SshSession, link: AgentLink) {
      const notify = (batch: FsEvents) => link.peer?.notify('fs.events', batch) ?? false;
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
      const views = manager.views();
      const mounted = views.filter((v) => v.state === 'mounted').length;
      const errors = views.filter((v) => v.error).map((v) => `${v.mountPoint}: ${v.error}`);
      return `${mounted} of ${views.length} mounted${errors.length ? `; ${errors.join('; ')}` : ''}`;
    },
    views: () => manager.views(),
    async stop() {
      detach?.();
      await manager.stop();
    },
    onChange: (listener) => listeners.push(listener),
  };
}
