// How an SSH target is written in messages and listings (`user@host:port`). Kept free of ssh2 so that the CLI's
// quick commands (ls, status) can use it without loading the SSH stack.
import type { SshConfig } from '../config/schema.js';

/** `user@host:port`; an IPv6 host in brackets, as `ssh` and URLs write it. */
export function sshTarget(ssh: Pick<SshConfig, 'user' | 'host' | 'port'>): string {
  return `${ssh.user}@${ssh.host.includes(':') ? `[${ssh.host}]` : ssh.host}:${ssh.port}`;
}
