// The OpenSSH `ssh` command line that reaches an instance's guest the way the host agent's own connection does: the
// same user, port, identity and agent choice from tether.yaml (and nothing from ~/.ssh/config, which the agent does
// not read either), trusting exactly the host key tether pinned. OpenSSH reads keys from known_hosts files only, so
// the pin is handed to it as a one-line known_hosts file under a host alias of its own, which no other entry of the
// user's can match or be added to.
import type { SshConfig } from '../config/schema.js';
import type { HostKey } from './hostkey.js';

/** Seconds for the TCP connect and, in OpenSSH, for the server's banner too. */
const CONNECT_TIMEOUT_S = 10;

/** The host name the pinned key is filed under for `ssh` (HostKeyAlias). */
export function hostKeyAlias(instance: string): string {
  return `tether.${instance}`;
}

/** The known_hosts line of a pinned key. */
export function knownHostsLine(alias: string, key: HostKey): string {
  return `${alias} ${key.algorithm} ${key.base64}\n`;
}

export interface OpensshTarget {
  ssh: Pick<SshConfig, 'host' | 'port' | 'user' | 'identityFile' | 'useAgent'> &
    Partial<Pick<SshConfig, 'keepaliveInterval' | 'keepaliveCountMax'>>;
  /** The known_hosts file holding knownHostsLine(alias, pinned key). */
  knownHosts: string;
  alias: string;
  /** Ask for a terminal in the guest (`-t`) or for none (`-T`). */
  tty: boolean;
}

/**
 * The arguments to `ssh` (without the command itself) that run `remoteCommand` in the guest. `identityFile` must be
 * expanded already (no `~`).
 */
export function opensshArgv(target: OpensshTarget, remoteCommand: string): string[] {
  const { ssh } = target;
  const options = [
    // No ~/.ssh/config: a Host * block there (a ProxyJump, another User) would reach some other machine.
    ['-F', '/dev/null'],
    ['-o', `HostKeyAlias=${target.alias}`],
    ['-o', `UserKnownHostsFile=${target.knownHosts}`],
    ['-o', 'GlobalKnownHostsFile=/dev/null'],
    ['-o', 'StrictHostKeyChecking=yes'],
    ['-o', 'UpdateHostKeys=no'],
    ['-o', 'CheckHostIP=no'],
    ['-o', 'LogLevel=ERROR'],
    // A guest that takes the connection but does not answer (a paused VM, a stalled link) ends the command with
    // ssh's own message instead of leaving it hanging; once in, the agent's keepalive settings say when the link is
    // dead.
    ['-o', `ConnectTimeout=${CONNECT_TIMEOUT_S}`],
    ['-o', `ServerAliveInterval=${ssh.keepaliveInterval ?? 10}`],
    ['-o', `ServerAliveCountMax=${ssh.keepaliveCountMax ?? 3}`],
    ['-p', String(ssh.port)],
    ['-l', ssh.user],
    ssh.identityFile ? ['-i', ssh.identityFile] : [],
    ssh.useAgent ? [] : ['-o', 'IdentityAgent=none'],
    [target.tty ? '-t' : '-T'],
  ].flat();
  // After `--` nothing is read as an option (ssh reads options after the destination too, unless told so).
  return [...options, '--', ssh.host, remoteCommand];
}
