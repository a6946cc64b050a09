// The sshfs command line tether runs in the guest for one mount: `sshfs -f -o slave,...` with the cache options
// chosen below, preceded by the start marker. Owns that choice; nothing else here does I/O.
//
// Cache options. What matters: (1) host edits must become visible in the guest quickly — the inotify applier's
// touch invalidates sshfs's caches for the paths it is told about, but ignored trees (.git, node_modules) and a
// degraded watch rely on timeouts alone; (2) warm metadata walks (find, git status) must stay cached.
// Measured with `node scripts/bench/mount.mjs --quick --cache ...` (testbed guest, loopback SSH, 2 noisy cores,
// builtin driver, seconds, medians of 3; staleness = host rewrites a file, guest `cat` loop sees the new content):
//   options                                   find 2000 cold  find 2000 warm  git status 1000 warm  staleness
//   (sshfs defaults: dcache 20 s)             2.36            0.82            1.26                  0.18
//   kernel_cache                              2.28            1.49            0.35                  0.46
//   auto_cache                                0.91            0.14            0.32                  0.33
//   dir_cache=no                              1.22            2.84            1.54                  0.09
//   auto_cache,dcache_timeout=2               0.63            0.40            0.30                  0.18
//   auto_cache,dcache_timeout=2,attr/entry .5 0.67            0.81            0.43                  0.29
// Content staleness is low everywhere (libfuse invalidates cached pages when it sees a new mtime), so the choice is
// about metadata: sshfs's default 20 s directory/stat cache can show a host-changed size or listing for 20 s in
// trees the watcher does not report; dir_cache=no is fresh but makes warm walks several times slower. Chosen:
// auto_cache (page cache kept across opens while mtime/size are unchanged) with dcache_timeout=2 (metadata at
// most ~2 s stale), which was also among the fastest rows. kernel_cache is not used: it trusts cached pages
// across opens even when the host changed the file. Users can override any of it with the mount's `sshfs` list.
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
export const CACHE_OPTIONS: readonly string[] = ['auto_cache', 'dcache_timeout=2'];

export function sshfsOptions(mount: MountConfig, cacheOptions: readonly string[] = CACHE_OPTIONS): string[] {
  return [...BASE_OPTIONS, ...cacheOptions, ...mount.sshfs];
}

/**
 * The guest's mount point for a mount as configured (the same path as on the host unless configured; may start with
 * `~`). What users see; the path sshfs is given is this one resolved in the guest (guest-path.ts).
 */
export function mountPointOf(mount: MountConfig): string {
  return mount.mountPoint ?? mount.location;
}

/**
 * Shell command for the exec channel: create the mount point, print the start marker (everything on stdout before
 * it is the login shell's startup output, dropped by the host: startup-output.ts), then become sshfs in the
 * foreground so the channel lives exactly as long as the mount's SFTP session. `guestPath` is the resolved mount
 * point (guest-path.ts).
 */
export function sshfsCommand(
  mount: MountConfig,
  guestPath: string,
  printMarker: string,
  cacheOptions?: readonly string[],
): string {
  const mp = shellQuote(guestPath);
  const opts = shellQuote(sshfsOptions(mount, cacheOptions).join(','));
  return `mkdir -p ${mp} && ${printMarker} && exec sshfs -f -o ${opts} ${shellQuote(`:${mount.location}`)} ${mp}`;
}
