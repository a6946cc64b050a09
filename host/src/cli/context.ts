// What most commands start from: a validated instance name → its paths (which must exist) and a control client;
// plus commander option parsers and the help footer shared by every command.
import { type Command, InvalidArgumentError } from 'commander';
import { ControlClient } from '../control/client.js';
import { type InstancePaths, instanceExists, instancePaths } from '../instance.js';
import { CliError, EXIT_CODES_HELP, UsageError } from './errors.js';
import { levelNumber } from './log-reader.js';

export function pathsFor(name: string): InstancePaths {
  try {
    return instancePaths(name);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Paths of an instance that must already exist. */
export function existingInstance(name: string): InstancePaths {
  const paths = pathsFor(name);
  if (!instanceExists(paths))
    throw new CliError(
      `no instance ${name} (no ${paths.config}); \`tether ls\` lists the instances there are, \`tether up ${name} --ssh USER@HOST:PORT\` creates it`,
    );
  return paths;
}

export function clientFor(paths: InstancePaths, timeoutMs?: number): ControlClient {
  return new ControlClient(paths.socket, timeoutMs);
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number ≥ 0');
  return n;
}

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number of seconds > 0');
  return n;
}

/** `--log-level` of the agent: a pino level name. */
export function parseLogLevel(value: string): string {
  if (levelNumber(value) === null) throw new InvalidArgumentError('expected trace, debug, info, warn, error or fatal');
  return value.toLowerCase();
}

/** Adds examples and the exit codes (tether's own unless given) to a command's --help. */
export function withHelp(cmd: Command, examples: string[], exitCodes = EXIT_CODES_HELP): Command {
  return cmd.addHelpText('after', `\nExamples:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n${exitCodes}`);
}
