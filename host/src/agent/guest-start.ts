// Starting or replacing the guest agent: when its socket does not answer, or when the agent that answers is not the
// build this host ships. The agent wiring calls only these two functions; what starting does (upload, systemd install
// or a background start) belongs to provisioning (host/src/provision/).
import type { Info } from '@tether/protocol';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { ensureGuestAgent, readManifest } from '../provision/index.js';
import type { SshSession } from '../ssh/index.js';

/**
 * Makes tether-guest run in the guest; resolves with a one-line summary and the socket it answers on once it does.
 * `replace`: an agent answers but is to be replaced by this host's build (restarted even when the installed copy is
 * current).
 */
export async function startGuestAgent(
  ssh: SshSession,
  config: Pick<Config, 'ssh' | 'guestAgent'>,
  bundleDir: string,
  log: Logger,
  replace = false,
  onStep?: (what: string) => void,
): Promise<{ summary: string; socket: string }> {
  const { summary, socket } = await ensureGuestAgent(ssh, config, bundleDir, log, { replace, onStep });
  return { summary, socket };
}

/**
 * Why the running agent is not the build in `bundleDir` (an upgrade of tether on the host leaves the old one running
 * in the guest), or null when it is, or when there is no build here to compare with (provisioning says so itself).
 */
export function outdatedAgent(info: Info, build: string | null, bundleDir: string): string | null {
  let manifest: { version: string; hash: string };
  try {
    manifest = readManifest(bundleDir);
  } catch {
    return null;
  }
  if (build === manifest.hash) return null;
  return (
    `the guest agent ${info.version} (build ${build ?? 'not reported'}) is not the one this host ships, ` +
    `${manifest.version} (build ${manifest.hash})`
  );
}
