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
// Chosen: dcache_timeout=2 (metadata at most ~2 s stale; sshfs's default 20 s can show a host-changed size or
// listing for 20 s in trees the watcher does not report, and dir_cache=no makes warm walks several times slower),
// without auto_cache. auto_cache keeps a file's cached pages across opens while its mtime and size look unchanged,
// and SFTP v3 carries whole-second mtimes: a host rewrite of the same size within the second of the previous one
// (an edit from 3000 to 3001, a test writing twice) stayed invisible in the guest until the pages aged out, seconds
// later, whatever the inotify applier touched. Without it every open reads the host's current content, at this cost
// (the bench above, both rows in one run):
//   options                       find 2000 cold  find 2000 warm  git status 1000 warm  staleness
//   auto_cache,dcache_timeout=2   0.17            0.030           0.088                 0.14
//   dcache_timeout=2              0.16            0.035           0.135                 0.03
// kernel_cache trusts cached pages even longer. Users can override any of it with the mount's `sshfs` list.
import type { MountConfig } from '../config/schema.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { sshfsMountedCommand } from './mountinfo.js';

/** Options every tether mount gets; user extras (MountConfig.sshfs) come after them and so win on conflicts. */
const BASE_OPTIONS = [
  // SFTP arrives on stdin/stdout instead of sshfs starting ssh itself (`slave` is accepted by every sshfs 3.x).
  'slave',
  // Other guest users (and root, e.g. docker) may use the mount; needs user_allow_other in /etc/fuse.conf.
  'allow_other',
  // Files owned by the host user appear owned by the guest's SSH user (git refuses "dubious ownership" otherwise).
  'idmap=user',
  // Not `ro` for read-only mounts: the server refuses their writes, and the guest applier's marker touch must get
  // through the guest kernel to raise its events. Not `default_permissions`: as on Lima's mounts, a container user
  // other than the SSH user may use a writable mount; the host decides with the host user's rights.
];

/**
 * Symlink targets pass through as they are. sshfs builds patched for CVE-2026-47187 (Debian 12's 3.7.3-1.2~deb12u1
 * and later) refuse absolute targets and targets with `..` by default (`contain_symlinks`): node_modules/.bin, npm's
 * local packages, git and Python venvs break on the mount. That default guards a client against a hostile server;
 * here the server is the user's own host. Older sshfs rejects the option, so the guest adds it only where `sshfs -h`
 * lists it, before the user's extras (which can turn it back on).
 */
const SYMLINKS_AS_THEY_ARE = 'no_contain_symlinks';

/** Staleness vs speed; see the numbers at the top. */
const CACHE_OPTIONS: readonly string[] = ['dcache_timeout=2'];

/**
 * The guest's mount point for a mount as configured (the same path as on the host unless configured; may start with
 * `~`). What users see; the path sshfs is given is this one resolved in the guest (guest-path.ts).
 */
export function mountPointOf(mount: MountConfig): string {
  return mount.mountPoint ?? mount.location;
}

/**
 * The host directory as sshfs asks for it. sshfs checks its root with an LSTAT, which a location that is itself a
 * symlink (a linked project directory; /tmp on macOS) fails as "Not a directory" with sftp-server; with a trailing
 * slash the lookup follows the link, as every later request under it does.
 */
function remoteDir(location: string): string {
  return location.endsWith('/') ? location : `${location}/`;
}

/**
 * Shell command for the exec channel: create the mount point, print the start marker (everything on stdout before
 * it is the login shell's startup output, dropped by the host: startup-output.ts), then become sshfs in the
 * foreground so the channel lives exactly as long as the mount's SFTP session. `guestPath` is the resolved mount
 * point (guest-path.ts). `unmountFirst` clears a dead mount left there, in the same command: between it and sshfs's
 * mount, the mount point is the plain directory underneath, and writes there would be hidden by the mount and lost;
 * a separate exec round trip (a login shell's start-up) made that window seconds long on a slow guest. `printReady`
 * (a command, see readyWatch) prints on stderr once the mount shows in the guest's mount table.
 */
export function sshfsCommand(
  mount: MountConfig,
  guestPath: string,
  printMarker: string,
  opts: { unmountFirst?: string; countTag?: string; printReady?: string } = {},
): string {
  const mp = shellQuote(guestPath);
  const ours = shellQuote([...BASE_OPTIONS, ...CACHE_OPTIONS].join(','));
  const theirs = mount.sshfs.length ? shellQuote(`,${mount.sshfs.join(',')}`) : '';
  const probe = `sshfs -h 2>&1 | grep -qw ${SYMLINKS_AS_THEY_ARE} && echo ,${SYMLINKS_AS_THEY_ARE} || true`;
  const unmount = opts.unmountFirst
    ? `{ ${opts.unmountFirst} || { echo cannot clear the stale sshfs mount at ${mp} >&2; exit 1; }; } && `
    : '';
  // How many entries the mount point holds before the mount covers them (see GuestMount.noteUnderlying), and which
  // boot of the guest this is (a remount after a reboot leaves no guest program on the old mount).
  const count = opts.countTag
    ? `printf '%s %s %s\\n' ${opts.countTag} "$(ls -A ${mp} 2>/dev/null | wc -l)" ` +
      '"$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" && '
    : '';
  const sshfs = `exec sshfs -f -o ${ours}"$x"${theirs} ${shellQuote(`:${remoteDir(mount.location)}`)} ${mp}`;
  const become = opts.printReady ? `{ ${readyWatch(guestPath, opts.printReady)}; ${sshfs}; }` : sshfs;
  return `x=$(${probe}) && ${unmount}mkdir -p ${mp} && ${count}${printMarker} && ${become}`;
}

/** How long, at most, the start command looks for its mount in the guest's mount table (50 ms a look). */
const READY_LOOKS = 600;

/**
 * A loop in the background, started right before sshfs, that runs `printReady` on stderr once the mount point's
 * topmost mount is sshfs's, and ends with sshfs (it looks while the shell's pid, which exec gives to sshfs, lives).
 * Looking from the same command, not from another exec channel, keeps a mount to one of the sshd's sessions
 * (MaxSessions: with N allowed, the Nth mount could never be seen), and spares a login shell's start-up per look.
 * Forked from a subshell that exits at once, so the loop is not left behind as a zombie child of sshfs.
 */
function readyWatch(guestPath: string, printReady: string): string {
  return (
    `( n=0; while [ "$n" -lt ${READY_LOOKS} ] && kill -0 $$ 2>/dev/null; do ` +
    `if ${sshfsMountedCommand(guestPath)}; then ${printReady} >&2; exit 0; fi; ` +
    'sleep 0.05 2>/dev/null || sleep 1; n=$((n + 1)); done </dev/null >/dev/null & )'
  );
}
