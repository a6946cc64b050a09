// `--ssh [USER@]HOST[:PORT]` (IPv6 as `[::1]:2222`) → the ssh fields of tether.yaml. What is left out takes ssh's
// defaults (the local user, port 22), also when it replaces an instance's target: `--ssh vm2` means vm2 as ssh
// would reach it, not vm2 on the old target's port.
import { isIP } from 'node:net';
import { userInfo } from 'node:os';
import { UsageError } from './errors.js';

interface SshTarget {
  user: string;
  host: string;
  port: number;
}

export function parseSshTarget(arg: string): SshTarget {
  const m = /^(?:([^@\s]+)@)?(\[[0-9a-fA-F:.]+\]|[^:@\s[\]]+)(?::(\d{1,5}))?$/.exec(arg.trim());
  if (!m) throw new UsageError(`--ssh ${arg}: expected [USER@]HOST[:PORT], e.g. dev@127.0.0.1:2222${bracketHint(arg)}`);
  const port = m[3] === undefined ? 22 : Number(m[3]);
  if (port < 1 || port > 65_535) throw new UsageError(`--ssh ${arg}: port ${m[3]} is not a port (1-65535)`);
  return { user: m[1] ?? userInfo().username, host: m[2].replace(/^\[|\]$/g, ''), port };
}

/** `user@::1` or `user@::1:2222`: an IPv6 address's own colons leave the port unclear without brackets. */
function bracketHint(arg: string): string {
  const at = arg.lastIndexOf('@');
  const [user, host] = [arg.slice(0, at + 1), arg.slice(at + 1).trim()];
  // `::1:2222` is an IPv6 address itself: the brackets are what tells address and port apart.
  if (isIP(host) !== 6) return '';
  return `; put an IPv6 address in brackets, a port after them: ${user}[${host}] or ${user}[${host}]:22`;
}
