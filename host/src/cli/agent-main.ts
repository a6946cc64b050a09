// Entry of the background host agent that `tether up` spawns (agent-spawn.ts):
// `agent-main.js NAME [--log-level L] [--timeout SECONDS]`.
// Kept apart from the command tree so the long-lived process loads only what the agent needs (no commander, no
// tables, no other subcommands). Errors before the agent runs go to stderr, which is the instance's stdio log.
// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { instanceExists, instancePaths } from '../instance.js';
import { startAgentProcess } from './agent-process.js';
import { EXIT_OK, reportError, UsageError } from './errors.js';

async function main(argv: string[]): Promise<number> {
  let name: string;
  let logLevel: string | undefined;
  let requirementTimeoutMs: number | undefined;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { 'log-level': { type: 'string' }, timeout: { type: 'string' } },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new Error(`expected one instance name, got ${positionals.length}`);
    name = positionals[0] as string;
    logLevel = values['log-level'];
    if (values.timeout !== undefined) {
      const s = Number(values.timeout);
      if (!(s > 0)) throw new Error(`--timeout: expected seconds > 0, got ${values.timeout}`);
      requirementTimeoutMs = s * 1000;
    }
  } catch (err) {
    throw new UsageError(
      `usage: agent-main.js NAME [--log-level LEVEL] [--timeout SECONDS]: ${(err as Error).message}`,
    );
  }
  const paths = instancePaths(name);
  if (!instanceExists(paths)) throw new UsageError(`no instance ${name} (no ${paths.config})`);
  const proc = await startAgentProcess(paths, loadConfig(paths.config), { logLevel, requirementTimeoutMs });
  await proc.done;
  return EXIT_OK;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => process.exit(reportError(err)),
);
