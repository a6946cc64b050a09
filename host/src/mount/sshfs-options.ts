// The sshfs command line tether runs in the guest for one mount: `sshfs -f -o slave,...` with the cache options
// chosen below. Owns that choice; nothing else here does I/O.
//
// Cache options, measured on this machine (testbed guest, loopback SSH, 2 cores; medians of 3, builtin driver):
//   MEASUREMENTS_PLACEHOLDER
import type { MountConfig } from '../config/schema.js';
import { shellQuote } from './guest-shell.js';

/** Options every tether mount gets; user extras (MountConfig.sshfs) come after them and so win on conflicts. */
export const BASE_OPTIONS = [
  // SFTP arrives on stdin/stdout instead of sshfs starting ssh itself (`slave` is accepted by every sshfs 3.x).
  'slave',
  // Other guest users (and root, e.g. docker) may use the mount; needs user_allow_other in /etc/fuse.conf.
  'allow_other',
  // Files owned by the host user appear owned by the guest's SSH user (git refuses "dubious ownership" otherwise).
  'idmap=user',
];

/** Staleness vs speed; see the numbers at the top. */
export const CACHE_OPTIONS: readonly string[] = [];

export function sshfsOptions(mount: MountConfig, cacheOptions: readonly string[] = CACHE_OPTIONS): string[] {
  return [...BASE_OPTIONS, ...cacheOptions, ...mount.sshfs];
}

/** The guest's mount point for a mount (the same path as on the host unless configured). */
export function mountPointOf(mount: MountConfig): string {
  return mount.mountPoint ?? mount.location;
}

/**
 * Shell command for the exec channel: create the mount point, then become sshfs in the foreground so the channel
 * lives exactly as long as the mount's SFTP session.
 */
export function sshfsCommand(mount: MountConfig, cacheOptions?: readonly string[]): string {
  const mp = shellQuote(mountPointOf(mount));
  const opts = shellQuote(sshfsOptions(mount, cacheOptions).join(','));
  return `mkdir -p ${mp} && exec sshfs -f -o ${opts} ${shellQuote(`:${mount.location}`)} ${mp}`;
}
