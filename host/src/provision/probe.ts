// What provisioning learns from the guest before it acts: one shell script over SSH that prints tagged `key=value`
// lines (arch, Node, C library, systemd, privileges, the install directory, the agent copies already there), read
// past whatever the login shell's startup files print. Owns that script and its parsing; it changes nothing in the
// guest but the install directory it creates.
import { type Config, DEFAULT_GUEST_SOCKET } from '../config/schema.js';
import { describeExit } from '../ssh/exec.js';
import { shellQuote as q } from '../ssh/shell-quote.js';
import { unrunScript } from '../ssh/unrun-script.js';
import type { GuestShell } from './ensure.js';
import { archOf, BUNDLE_FILE, type GuestArch, nodeUsable } from './manifest.js';

/** Where the systemd install (`tether-guest install`) puts the executable, and its unit. */
export const SYSTEM_LIB = '/usr/local/lib/tether-guest';
const UNIT_FILE = '/etc/systemd/system/tether-guest.service';
/** An upload goes to `<file><UPLOAD_SUFFIX><host agent pid>` and is renamed into place once complete. */
export const UPLOAD_SUFFIX = '.upload-';

export interface GuestFacts {
  arch: GuestArch | null;
  unameM: string;
  nodeVersion: string;
  /** Absolute path of the login shell's `node` (`command -v node`), '' when there is none. */
  nodePath: string;
  /** The login user's $HOME. */
  home: string;
  /** `getconf GNU_LIBC_VERSION` (`glibc 2.36`); '' on musl (Alpine) and other C libraries. */
  libc: string;
  hasNode: boolean;
  /** The tether-guest systemd unit is enabled (it starts at boot). */
  unitEnabled: boolean;
  /**
   * Whose the unit's socket is and where (its `--socket-owner` and `--socket`, from the unit file); '' without a
   * unit. Another user's agent socket is mode 0600: the login user cannot use it.
   */
  unitSocketOwner: string;
  unitSocket: string;
  /** The login user's name (`id -un`). */
  user: string;
  /** `systemctl is-system-running`: initializing or starting while the guest boots, stopping while it shuts down. */
  systemState: string;
  /** systemd runs the tether-guest unit (`systemctl is-active`: active or activating). */
  unitActive: boolean;
  root: boolean;
  /** Root is to be had without a password: through `sudo -n`, or `doas -n` (Alpine's cloud images). */
  sudo: boolean;
  /** The prefix that runs a command as root ('sudo -n ' or 'doas -n '); '' when there is none. */
  elevate: string;
  systemd: boolean;
  /** Absolute install directory (installDir resolved against the login user's home). */
  dir: string;
  /** Why `mkdir -p` of the install directory failed (its own message), or null when the directory is there. */
  dirError: string | null;
  socketDirWritable: boolean;
  /** Installed copies and the hash each reports (`tether-guest version` → `<version> <hash>`). */
  installed: { path: string; kind: 'bundle' | 'sea'; version: string; hash: string }[];
}

/** The shell line that sets D to the absolute install directory (installDir is relative to the login user's home). */
export function installDirLine(installDir: string): string {
  return `D=${q(installDir)}; case "$D" in /*) ;; *) D="$HOME/$D" ;; esac`;
}

export function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1] || '(no output)';
}

export async function probe(shell: GuestShell, config: Pick<Config, 'guestAgent'>): Promise<GuestFacts> {
  const { installDir, socket } = config.guestAgent;
  const sockDir = socket.includes('/') ? socket.slice(0, socket.lastIndexOf('/')) || '/' : '.';
  const script = [
    // An empty line first: whatever the login shell's startup files print without a final newline ends there
    // instead of running into the first key=value line.
    'echo',
    installDirLine(installDir),
    // mkdir's own message (on one line) says why the install directory cannot be made; reported when it is needed.
    `E=$(mkdir -p "$D" 2>&1) || echo "direrror=$(printf %s "$E" | tr '\\n' ' ')"`,
    // Uploads a stopped or killed agent left behind (up to ~100 MB each): no process has them open any more, unlike
    // one still being written (by the login user's sftp-server or cat, whose descriptors it may read). Compared by
    // the path the kernel shows for a descriptor: symlinks resolved (/home -> /var/home).
    `R=$(cd "$D" 2>/dev/null && pwd -P); [ -n "$R" ] && for f in "$R"/tether-guest*${UPLOAD_SUFFIX}*; do [ -f "$f" ] || continue; o=; ` +
      'for d in /proc/[0-9]*/fd/*; do [ "$(readlink "$d" 2>/dev/null)" = "$f" ] && o=1 && break; done; ' +
      '[ -n "$o" ] || rm -f "$f"; done',
    'echo "dir=$D"',
    'echo "arch=$(uname -m)"',
    // The login shell's node by absolute path (nvm, /opt): `sudo` would not find it by name. An alias is no path.
    'N=$(command -v node 2>/dev/null); case "$N" in /*) ;; *) N= ;; esac',
    'echo "nodepath=$N"',
    'echo "home=$HOME"',
    'echo "node=$([ -n "$N" ] && "$N" -v 2>/dev/null)"',
    'echo "uid=$(id -u)"',
    'echo "user=$(id -un)"',
    `[ -f ${UNIT_FILE} ] && echo "unitexec=$(sed -n 's/^ExecStart=//p' ${UNIT_FILE} | head -n 1)"`,
    'echo "libc=$(getconf GNU_LIBC_VERSION 2>/dev/null)"',
    'test -d /run/systemd/system && echo systemd=1',
    'echo "unit=$(systemctl is-enabled tether-guest 2>/dev/null)"',
    'echo "boot=$(systemctl is-system-running 2>/dev/null)"',
    'echo "active=$(systemctl is-active tether-guest 2>/dev/null)"',
    'if sudo -n true 2>/dev/null; then echo sudo=sudo; elif doas -n true 2>/dev/null; then echo sudo=doas; fi',
    `(mkdir -p ${q(sockDir)} && test -w ${q(sockDir)}) 2>/dev/null && echo sockdir=1`,
    `for f in "$D/tether-guest" ${SYSTEM_LIB}/tether-guest; do [ -x "$f" ] && echo "sea:$f=$("$f" version 2>/dev/null)"; done`,
    `for f in "$D/${BUNDLE_FILE}" ${SYSTEM_LIB}/${BUNDLE_FILE}; do [ -f "$f" ] && [ -n "$N" ] && echo "bundle:$f=$("$N" "$f" version 2>/dev/null)"; done`,
    'true',
  ].join('\n');
  const r = await shell.execText(script, 60_000);
  if (r.code !== 0)
    throw new Error(`probing the guest failed (${describeExit(r)}): ${unrunScript(r) ?? lastLine(r.stderr)}`);
  const facts: GuestFacts = {
    arch: null,
    unameM: '',
    nodeVersion: '',
    libc: '',
    nodePath: '',
    home: '',
    hasNode: false,
    unitEnabled: false,
    unitSocketOwner: '',
    unitSocket: '',
    user: '',
    systemState: '',
    unitActive: false,
    root: false,
    sudo: false,
    elevate: '',
    systemd: false,
    dir: '',
    dirError: null,
    socketDirWritable: false,
    installed: [],
  };
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1).trim();
    if (key === 'dir') facts.dir = value;
    else if (key === 'direrror') facts.dirError = value || 'mkdir -p failed';
    else if (key === 'nodepath') facts.nodePath = value;
    else if (key === 'home') facts.home = value;
    else if (key === 'arch') {
      facts.unameM = value;
      facts.arch = archOf(value);
    } else if (key === 'node') {
      facts.nodeVersion = value;
      facts.hasNode = nodeUsable(value);
    } else if (key === 'uid') facts.root = value === '0';
    else if (key === 'user') facts.user = value;
    else if (key === 'unitexec') {
      const args = unitArgs(value);
      facts.unitSocketOwner = argAfter(args, '--socket-owner') ?? '';
      facts.unitSocket = argAfter(args, '--socket') ?? DEFAULT_GUEST_SOCKET;
    } else if (key === 'libc') facts.libc = value;
    else if (key === 'systemd') facts.systemd = true;
    else if (key === 'unit') facts.unitEnabled = value === 'enabled';
    else if (key === 'boot') facts.systemState = value;
    else if (key === 'active') facts.unitActive = isActive(value);
    else if (key === 'sudo') {
      facts.sudo = true;
      facts.elevate = `${value} -n `;
    } else if (key === 'sockdir') facts.socketDirWritable = true;
    else if (key.startsWith('sea:') || key.startsWith('bundle:')) {
      const [version, hash] = value.split(/\s+/);
      if (version && hash) {
        const kind = key.startsWith('sea:') ? 'sea' : 'bundle';
        facts.installed.push({ path: key.slice(kind.length + 1), kind, version, hash });
      }
    }
  }
  if (!facts.dir)
    throw new Error(
      `probing the guest printed no install directory: ${unrunScript(r) ?? lastLine(r.stdout + r.stderr)}`,
    );
  return facts;
}

export function isBooting(systemState: string): boolean {
  return systemState === 'initializing' || systemState === 'starting';
}

export function isActive(unitState: string): boolean {
  return unitState === 'active' || unitState === 'activating';
}

/** The last `key=value` value in a guest command's output ('' when there is none). Exported for its test. */
export function taggedValue(stdout: string, key: string): string {
  const line = stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith(`${key}=`));
  return line ? line.slice(key.length + 1).trim() : '';
}

/**
 * The words of a unit's ExecStart as `tether-guest install` writes them: bare words, and double-quoted ones with
 * `"`, `\\`, `$` and `` ` `` escaped by a backslash.
 */
export function unitArgs(execStart: string): string[] {
  const args: string[] = [];
  for (const m of execStart.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) {
    args.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]);
  }
  return args;
}

function argAfter(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
