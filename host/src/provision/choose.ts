// Which copy of the agent a guest runs (the script bundle on its Node, or the single executable for its
// architecture) and on which socket: decisions from the probed facts alone, without I/O.
import { DEFAULT_GUEST_SOCKET } from '../config/schema.js';
import type { GuestArch } from './manifest.js';
import type { GuestFacts } from './probe.js';

/**
 * The socket the agent is to serve on. The default one's directory (/run/tether) takes root to create: a login user
 * without root or passwordless sudo (a container-like guest, a test sshd) gets its own in the install directory, as
 * Lima keeps a user's sockets in a directory of its own. A socket tether.yaml names is used as it is, and fails with
 * the fix when the user cannot create it.
 */
export function agentSocket(
  configured: string,
  facts: Pick<
    GuestFacts,
    | 'root'
    | 'sudo'
    | 'socketDirWritable'
    | 'dir'
    | 'dirError'
    | 'unitEnabled'
    | 'unitActive'
    | 'unitSocket'
    | 'unitSocketOwner'
    | 'user'
  >,
): string {
  // A systemd unit installed for this user serves the default socket, or will once the guest has booted. One
  // installed for another (root's) serves a socket only that user may open.
  const unitServesUser =
    (facts.unitEnabled || facts.unitActive) && facts.unitSocket === configured && facts.unitSocketOwner === facts.user;
  const privileged = facts.root || facts.sudo || facts.socketDirWritable || unitServesUser;
  if (configured !== DEFAULT_GUEST_SOCKET || privileged || facts.dirError !== null || facts.dir === '')
    return configured;
  return `${facts.dir.replace(/\/$/, '')}/agent.sock`;
}

/**
 * What runs the agent: the guest's Node with the script bundle, else the single executable. As a systemd service, or
 * started through sudo, the agent runs as root without the login shell's PATH and HOME: a Node from a version manager
 * under the user's home (nvm, asdf, volta, mise: often a shim that needs the user's environment; SELinux also keeps
 * services from running files in home directories) is then passed over for the single executable when that can run.
 */
export function chooseArtefact(
  facts: Pick<
    GuestFacts,
    'arch' | 'hasNode' | 'nodePath' | 'home' | 'libc' | 'systemd' | 'root' | 'sudo' | 'socketDirWritable'
  >,
): 'bundle' | GuestArch {
  if (!facts.arch) return 'bundle';
  if (!facts.hasNode) return facts.arch;
  // Run by systemd, or in the background through `sudo` when the login user cannot create the socket.
  const asRoot =
    (facts.systemd && (facts.root || facts.sudo)) || (!facts.root && facts.sudo && !facts.socketDirWritable);
  const nodeInHome = facts.home !== '' && facts.nodePath.startsWith(`${facts.home.replace(/\/$/, '')}/`);
  return asRoot && nodeInHome && seaLibcProblem(facts.libc) === null ? facts.arch : 'bundle';
}

/** The glibc the single executables (Node's official builds) need. */
const SEA_MIN_GLIBC: readonly [number, number] = [2, 28];

/** Why the single executable cannot run on a guest with this C library, or null when it can. */
export function seaLibcProblem(libc: string): string | null {
  const m = /^glibc (\d+)\.(\d+)/.exec(libc);
  if (!m) return 'it needs glibc, and the guest has none (musl, as on Alpine?)';
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const [needMajor, needMinor] = SEA_MIN_GLIBC;
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return null;
  return `it needs glibc ${needMajor}.${needMinor} or newer, and the guest has ${libc}`;
}
