// Host path expansion for config values and CLI arguments (identity files, host sockets, mount locations).
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';

/**
 * `~` and `~/x` → the host user's home; relative paths are taken from the config file's directory. Host paths only:
 * a guest mountPoint keeps its `~`, which only the guest can expand (host/src/mount/guest-path.ts).
 */
export function expandHome(p: string, base?: string): string {
  if (p === '~') return homedir();
  if (p.startsWith('~/')) return join(homedir(), p.slice(2));
  if (base !== undefined && !isAbsolute(p)) return resolve(base, p);
  return p;
}
