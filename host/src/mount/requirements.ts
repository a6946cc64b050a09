// Boot requirements for mounts, checked before anything is mounted: each host directory exists; in the guest over
// SSH: sshfs (and /dev/fuse) present, `user_allow_other` in /etc/fuse.conf (fixed with `sudo -n` when allowed), every
// mount point creatable and writable by the SSH user (checked where it resolves to in the guest: `~`, symlinks). Each
// failure says what is wrong and how to fix it, and which mounts it keeps out (one mount's missing directory must not
// hold the others back), as words for people and as a cause code and fix for doctor and the agent. Mounts nothing.
import { statSync } from 'node:fs';
import type { Client } from 'ssh2';
import type { MountConfig } from '../config/schema.js';
import type { MountCause } from '../model.js';
import { describeExit, type ExecResult, execOn, GuestCommandTimeoutError } from '../ssh/exec.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { unrunScript } from '../ssh/unrun-script.js';
import { describeGuestPath, resolveGuestPath } from './guest-path.js';
import { isSshfsType, mountedFsType } from './mountinfo.js';
import { mountPointOf } from './sshfs-options.js';

export interface MountRequirement {
  name: string;
  ok: boolean;
  /** What failed and how to fix it; on success, what was done (e.g. fixed with sudo) or null. */
  detail: string | null;
  /** Why it is not met, set where that was found; absent when met. */
  cause?: MountCause;
  /** What to do about it, as doctor advises it; absent when met, or when the detail is all there is to go on. */
  fix?: string;
  /** Met by changing the guest with sudo (a line in /etc/fuse.conf, a mount point made): worth a log line each time. */
  changedGuest?: boolean;
  /** The mounts it concerns (indices into the configured mounts); absent when every mount needs it (sshfs). */
  mounts?: number[];
  /** A mount point's check: where it resolved to in the guest (absolute, symlinks followed), when it could. */
  guestPath?: string;
}

export interface RequirementOptions {
  /** Try `sudo -n` (never prompts) to fix /etc/fuse.conf and to create mount points. Default true. */
  fix?: boolean;
  /** Mount points (as configured) a running agent has mounted: their sshfs mount is that one, not a leftover. */
  mountedByAgent?: ReadonlySet<string>;
  /** Check only these mounts (indices into the configured mounts), e.g. those still waiting; default all. */
  only?: readonly number[];
}

/** An unmet requirement: what is wrong for people, its cause, and the fix when there is one to give. */
function unmet(name: string, cause: MountCause, detail: string, fix?: string): MountRequirement {
  return { name, ok: false, detail, cause, ...(fix ? { fix } : {}) };
}

/** The host directory to export: it must exist (a typo would otherwise surface as a failing mount in the guest). */
function checkLocation(mount: MountConfig, index: number): MountRequirement {
  const name = `host directory ${mount.location}`;
  const field = `mounts[${index}].location`;
  const mounts = [index];
  const elsewhere = `or set ${field} in tether.yaml to one that exists`;
  const create = `create the directory ${mount.location} on the host, ${elsewhere}`;
  const readable = `make ${mount.location} readable by the user tether runs as, ${elsewhere}`;
  try {
    if (statSync(mount.location).isDirectory()) return { name, ok: true, detail: null, mounts };
    return {
      ...unmet(name, 'host-directory', `${field} ${mount.location} is not a directory on the host`, create),
      mounts,
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const [why, fix] =
      e.code === 'ENOENT'
        ? ['does not exist on the host', create]
        : [`cannot be read on the host (${e.code ?? e.message})`, readable];
    return { ...unmet(name, 'host-directory', `${field} ${mount.location} ${why}`, fix), mounts };
  }
}

const FUSE_CONF_FIX = 'echo user_allow_other | sudo tee -a /etc/fuse.conf';
const FUSE_CONF_FIX_AS_ROOT = 'echo user_allow_other >> /etc/fuse.conf';

async function checkSshfs(client: Client): Promise<MountRequirement> {
  const name = 'sshfs in the guest';
  const r = await execOn(
    client,
    // The closing word tells a check that passed from a login that ran nothing and exited 0 (see unrunScript).
    'command -v sshfs || exit 3; test -c /dev/fuse || exit 4; test -r /dev/fuse && test -w /dev/fuse || exit 5; echo sshfs=ok',
  );
  if (r.code === 0 && /^sshfs=ok$/m.test(r.stdout)) return { name, ok: true, detail: null };
  const install = 'sudo apt-get install sshfs, or sudo dnf install fuse-sshfs';
  const missing: Record<number, MountRequirement> = {
    3: unmet(
      name,
      'sshfs-missing',
      `sshfs is not installed in the guest (e.g. ${install})`,
      `install sshfs in the guest, e.g. ${install}`,
    ),
    4: unmet(
      name,
      'fuse-device',
      'the guest has no /dev/fuse (load the fuse module: sudo modprobe fuse)',
      'load the fuse module in the guest: sudo modprobe fuse',
    ),
    5: unmet(
      name,
      'fuse-device',
      'the SSH user cannot open /dev/fuse in the guest (fix: sudo chmod 0666 /dev/fuse)',
      'in the guest: sudo chmod 0666 /dev/fuse',
    ),
  };
  return (
    (r.code !== null && missing[r.code]) ||
    unmet(
      name,
      'guest-unchecked',
      `cannot check for sshfs in the guest: ${unrunScript(r) ?? (r.stderr.trim() || describeExit(r))}`,
    )
  );
}

/**
 * Shell: `as_root CMD…` runs CMD as root without a password prompt: through `sudo -n`, or `doas -n` on guests without
 * sudo (Alpine's cloud images).
 */
const AS_ROOT = [
  'as_root() {',
  '  if command -v sudo >/dev/null 2>&1; then sudo -n "$@"',
  '  elif command -v doas >/dev/null 2>&1; then doas -n "$@"',
  '  else echo "neither sudo nor doas is installed" >&2; return 127; fi',
  '}',
].join('\n');

/**
 * What the guest's /etc/fuse.conf says of user_allow_other: `yes`, `no`, `root` (the SSH user is root, who needs
 * none), `unreadable`; null when the command could not run at all (a ForceCommand, a broken shell).
 */
async function fuseConfState(client: Client): Promise<{ state: string | null; run: ExecResult }> {
  const run = await execOn(
    client,
    [
      'if [ "$(id -u)" = 0 ]; then echo fuse=root',
      'elif [ -e /etc/fuse.conf ] && [ ! -r /etc/fuse.conf ]; then echo fuse=unreadable',
      "elif grep -Eq '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then echo fuse=yes",
      'else echo fuse=no; fi',
    ].join('\n'),
  );
  return { state: /^fuse=(\w+)$/m.exec(run.stdout)?.[1] ?? null, run };
}

async function checkFuseConf(client: Client, fix: boolean): Promise<MountRequirement> {
  const name = 'user_allow_other in /etc/fuse.conf';
  const { state, run } = await fuseConfState(client);
  if (state === null) {
    const why = unrunScript(run) ?? (run.stderr.trim() || run.stdout.trim() || describeExit(run));
    return unmet(name, 'guest-unchecked', `cannot run a command in the guest to look at /etc/fuse.conf: ${why}`);
  }
  if (state === 'yes' || state === 'root') return { name, ok: true, detail: null };
  // fusermount reads it as root: a file the SSH user cannot read is fusermount's to judge when sshfs starts.
  if (state === 'unreadable')
    return { name, ok: true, detail: '/etc/fuse.conf is not readable by the SSH user; fusermount checks it as root' };
  let tried = '';
  if (fix) {
    const r = await execOn(client, `${AS_ROOT}\nas_root sh -c 'echo user_allow_other >> /etc/fuse.conf'`);
    if (r.code === 0 && (await fuseConfState(client)).state === 'yes') {
      return { name, ok: true, detail: 'added user_allow_other to /etc/fuse.conf with sudo', changedGuest: true };
    }
    tried = ` (sudo -n or doas -n was not allowed: ${r.stderr.trim() || describeExit(r)})`;
  } else {
    // Only looking (doctor): whether the fix can use sudo decides how it is worded.
    const r = await execOn(client, `${AS_ROOT}\nas_root true`);
    if (r.code !== 0) tried = ' (the SSH user may not use sudo -n or doas -n)';
  }
  // Without sudo for the login user, the line is for root to add (su, a console).
  const how = tried ? ` as root: ${FUSE_CONF_FIX_AS_ROOT}` : `: ${FUSE_CONF_FIX}`;
  return unmet(
    name,
    'fuse-conf',
    `sshfs -o allow_other needs user_allow_other in the guest's /etc/fuse.conf${tried}; fix it in the guest${how}`,
    tried ? `as root in the guest: ${FUSE_CONF_FIX_AS_ROOT}` : FUSE_CONF_FIX,
  );
}

/**
 * A mount point to suggest in place of `path` (absolute): the same path under ~/host when the SSH user's home is
 * known, which that user may always create (/mnt needs sudo, which many guests do not give).
 */
export function mountPointElsewhere(path: string, underHome = true): string {
  const rest = path === '/' ? '' : path;
  return underHome ? `~/host${rest}` : `/mnt${rest || '/host'}`;
}

/** Whether `path` is `dir` or a directory above it (both absolute, resolved). */
function covers(path: string, dir: string): boolean {
  return path === dir || path === '/' || dir.startsWith(`${path}/`);
}

async function checkMountPoint(
  client: Client,
  mountPoint: string,
  fix: boolean,
  guestHome: string | null,
  mountedByAgent?: ReadonlySet<string>,
): Promise<MountRequirement> {
  const name = `mount point ${mountPoint}`;
  let path: string;
  try {
    ({ path } = await resolveGuestPath(client, mountPoint));
  } catch (err) {
    if (err instanceof GuestCommandTimeoutError)
      // A FUSE mount whose sshfs is stopped or hung blocks every look at its path, this one's too.
      return unmet(
        name,
        'guest-unchecked',
        `${mountPoint} did not answer in the guest within ${err.timeoutMs / 1000} s: a mount there whose sshfs process is stopped or hung holds every access to it`,
        `in the guest, end that sshfs process (kill -CONT, then kill, if it was stopped): tether mounts ${mountPoint} again by itself`,
      );
    return unmet(name, 'guest-unchecked', (err as Error).message);
  }
  // Kept whatever the verdict: `mount ls` shows it for a mount that a requirement kept from ever mounting.
  return {
    ...(await checkResolvedMountPoint(client, name, mountPoint, path, fix, guestHome, mountedByAgent)),
    guestPath: path,
  };
}

/** The verdict on a mount point that resolved to `path` in the guest. */
async function checkResolvedMountPoint(
  client: Client,
  name: string,
  mountPoint: string,
  path: string,
  fix: boolean,
  guestHome: string | null,
  mountedByAgent?: ReadonlySet<string>,
): Promise<MountRequirement> {
  const where = describeGuestPath(mountPoint, path);
  // Another mount point, as the detail words it and as doctor's fix does (which names where it is set).
  const movePoint = (to: string) => [
    `set the mount's mountPoint to ${to}`,
    `set the mount's mountPoint in tether.yaml (mounts:) to ${to}`,
  ];
  // The host's home at the same path as the SSH user's own (the same user name on a Linux host, or root on both
  // sides) would hide ~/.ssh and the guest agent's install directory behind the host's files.
  if (guestHome && covers(path, guestHome)) {
    const [say, advice] = movePoint(`another path, e.g. ${mountPointElsewhere(path)}`);
    return unmet(
      name,
      'mount-point-hides-home',
      `mounting on ${where} would hide the SSH user's home ${guestHome} in the guest (its .ssh, the guest agent); ${say}`,
      advice,
    );
  }
  const mp = shellQuote(path);
  const info = await execOn(client, 'cat /proc/self/mountinfo');
  const fsType = mountedFsType(info.stdout, path);
  if (isSshfsType(fsType))
    return {
      name,
      ok: true,
      detail: mountedByAgent?.has(mountPoint)
        ? 'mounted by the running agent'
        : 'an earlier sshfs mount is there; it will be replaced',
    };
  if (fsType !== null) {
    const advice = `unmount it in the guest (sudo umount ${mp}), or ${movePoint('another path')[1]}`;
    return unmet(name, 'mount-point-taken', `${where} already has a ${fsType} filesystem mounted`, advice);
  }
  const r = await execOn(client, `mkdir -p ${mp} && test -w ${mp}`);
  if (r.code === 0) return { name, ok: true, detail: null };
  // A directory that exists (e.g. /root for a host agent run as root) belongs to someone else: mounting over it
  // would hide it, so the fix is another mount point, never taking it over.
  if ((await execOn(client, `test -e ${mp}`)).code === 0) {
    const [say, advice] = movePoint(`a path the SSH user may create, e.g. ${mountPointElsewhere(path, !!guestHome)}`);
    return unmet(
      name,
      'mount-point-taken',
      `${where} exists in the guest and is not the SSH user's to mount on; ${say}`,
      advice,
    );
  }
  const why = r.stderr.trim() || `${where} is not writable by the SSH user`;
  if (fix) {
    const s = await execOn(
      client,
      `${AS_ROOT}\nas_root mkdir -p ${mp} && as_root chown "$(id -u):$(id -g)" ${mp} && test -w ${mp}`,
    );
    if (s.code === 0) return { name, ok: true, detail: `created ${where} with sudo`, changedGuest: true };
  }
  const create = `sudo mkdir -p ${mp} && sudo chown "$(id -u):$(id -g)" ${mp}`;
  return unmet(
    name,
    'mount-point-not-creatable',
    `cannot create ${where} as the SSH user (${why}); create it in the guest: ${create}`,
    create,
  );
}

/** The SSH user's home in the guest, resolved; null when it cannot be told (then nothing is refused for it). */
async function guestHomeOf(client: Client): Promise<string | null> {
  try {
    return (await resolveGuestPath(client, '~')).path;
  } catch {
    return null;
  }
}

/** Checks every mount requirement in order; never throws for a failed check (a failed SSH exec does throw). */
export async function checkMountRequirements(
  client: Client,
  mounts: readonly MountConfig[],
  opts: RequirementOptions = {},
): Promise<MountRequirement[]> {
  const fix = opts.fix ?? true;
  const checked = opts.only ?? [...mounts.keys()];
  if (checked.length === 0) return [];
  const out = checked.map((i) => checkLocation(mounts[i], i));
  out.push(await checkSshfs(client), await checkFuseConf(client, fix));
  // One check per mount point, for every mount on it.
  const points = new Map<string, number[]>();
  for (const i of checked) {
    const mp = mountPointOf(mounts[i]);
    points.set(mp, [...(points.get(mp) ?? []), i]);
  }
  const home = await guestHomeOf(client);
  for (const [mp, on] of points) {
    out.push({ ...(await checkMountPoint(client, mp, fix, home, opts.mountedByAgent)), mounts: on });
  }
  return out;
}
