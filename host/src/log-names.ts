// What the host agent's log looks like from outside: the files under <instance>/logs/ (tether.N.log, current.log) and
// the components its lines carry. Shared by the writer (log.ts, log-file.ts) and the CLI's readers, which must not
// load pino to find a file name.
import { readdirSync } from 'node:fs';

export const COMPONENTS = [
  'agent',
  'ssh',
  'link',
  'forward',
  'mount',
  'sftp',
  'watch',
  'control',
  'provision',
] as const;
export type Component = (typeof COMPONENTS)[number];

const LOG_FILE = 'tether';
export const CURRENT_LOG = 'current.log';
/** The background agent's own stdout and stderr: where a crash leaves its stack, before or past the logger. */
export const STDIO_LOG = 'agent.stdio.log';

export function logFileName(n: number): string {
  return `${LOG_FILE}.${n}.log`;
}

/** The numbers of the log files in `dir`, ascending. */
export function logFileNumbers(dir: string): number[] {
  const re = new RegExp(`^${LOG_FILE}\\.(\\d+)\\.log$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((name) => re.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}
