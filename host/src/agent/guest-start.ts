// Starting the guest agent when its socket does not answer. The agent wiring calls only startGuestAgent(); what it
// does (upload, systemd install or a background start) belongs to provisioning (host/src/provision/).
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { ensureGuestAgent } from '../provision/index.js';
import type { SshSession } from '../ssh/index.js';

/** Makes tether-guest run in the guest; resolves with a one-line summary once its socket answers. */
export async function startGuestAgent(
  ssh: SshSession,
  config: Pick<Config, 'ssh' | 'guestAgent'>,
  bundleDir: string,
  log: Logger,
): Promise<string> {
  const result = await ensureGuestAgent(ssh, config, bundleDir, log);
  return result.summary;
}
