// Creating a directory and its missing parents. Node's own `mkdirSync(path, {recursive: true})` never returns under
// a parent that exists but refuses new entries with ENOENT (procfs, sysfs: `TETHER_HOME=/proc/x`, a hostSocket
// under /sys): it retries the same two mkdir calls forever at full CPU. This one goes down from the deepest
// existing ancestor, once per missing directory, and throws the first error.
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/** Returns the directories it made, outermost first. */
export function makeDirs(path: string, mode = 0o777): string[] {
  const missing: string[] = [];
  for (let dir = path; ; dir = dirname(dir)) {
    try {
      if (statSync(dir).isDirectory()) break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    missing.push(dir);
    if (dirname(dir) === dir) break;
  }
  const made: string[] = [];
  for (const dir of missing.reverse()) {
    try {
      mkdirSync(dir, { mode });
      made.push(dir);
    } catch (err) {
      // Made meanwhile by another process (two `up`s, the agent and the CLI): as good as made here.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(dir).isDirectory()) throw err;
    }
  }
  return made;
}
