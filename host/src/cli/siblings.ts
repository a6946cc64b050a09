// Other instances whose agent runs against the same VM as this one (same SSH host and port). Two host agents of one
// VM each forward every guest port, so the second finds every host port taken by the first (its forwards all show
// `conflict`, held by tether itself), and both manage the same guest agent and mount points: `up` warns of it and
// `doctor` names it.
import { isLoopbackHost } from '../address.js';
import type { LoadedConfig } from '../config/load.js';
import type { SshConfig } from '../config/schema.js';
import { type InstancePaths, instancePaths, listInstances } from '../instance.js';
import { sshTarget } from '../ssh/target.js';
import { clientFor } from './context.js';

export interface Sibling {
  name: string;
  pid: number;
  target: string;
}

/** Host and port as they name a VM: the loopback names are one host (a QEMU user-network port forward). */
function vmKey(ssh: Pick<SshConfig, 'host' | 'port'>): string {
  return `${isLoopbackHost(ssh.host) ? 'loopback' : ssh.host.toLowerCase()}:${ssh.port}`;
}

/** The running instances other than `paths`' whose config points at the VM `ssh` names. */
export async function runningSiblings(
  paths: InstancePaths,
  ssh: Pick<SshConfig, 'host' | 'port'>,
  loadConfig: (file: string) => LoadedConfig,
): Promise<Sibling[]> {
  const key = vmKey(ssh);
  const found = await Promise.all(
    listInstances()
      .filter((name) => name !== paths.name)
      .map(async (name): Promise<Sibling | null> => {
        const other = instancePaths(name);
        let config: LoadedConfig;
        try {
          config = loadConfig(other.config);
        } catch {
          return null; // a broken config is its own instance's problem (ls and its doctor say so)
        }
        if (vmKey(config.ssh) !== key) return null;
        const status = await clientFor(other, 3_000)
          .status()
          .catch(() => null);
        return status?.pid ? { name, pid: status.pid, target: sshTarget(config.ssh) } : null;
      }),
  );
  return found.filter((s): s is Sibling => s !== null);
}

/** `instance dev (pid 123) runs against dev@127.0.0.1:2222`, for each sibling. */
export function describeSiblings(siblings: Sibling[]): string {
  return siblings.map((s) => `instance ${s.name} (pid ${s.pid}) runs against ${s.target}`).join('; ');
}
