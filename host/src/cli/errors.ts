// How the CLI fails: exit codes (0 ok, 1 failure, 2 usage) and one clear line on stderr; a stack trace only with
// TETHER_DEBUG=1. Commands throw CliError (or any Error) and never call process.exit themselves.
import { basename, dirname } from 'node:path';
import { ConfigError } from '../config/errors.js';
import { AgentNotAnsweringError, AgentNotRunningError } from '../control/client.js';
import { tetherHome } from '../instance.js';
import { complain } from './terminal.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Appended to every command's --help. */
export const EXIT_CODES_HELP = '\nExit codes: 0 ok, 1 failure (the reason is printed on stderr), 2 usage error.';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
  }
}

/** A command that passes on another program's exit status (`tether shell`), which has said what it had to say. */
export class ExitStatus extends CliError {
  constructor(code: number) {
    super(`exited with status ${code}`, code);
  }
}

/** The message printed for an error; config errors keep one line per problem. */
export function describeError(err: unknown): string {
  if (err instanceof AgentNotRunningError) {
    const instance = basename(dirname(err.socketPath));
    return `instance ${instance}: ${err.message}; start it with \`tether up ${instance}\``;
  }
  if (err instanceof AgentNotAnsweringError) {
    const instance = basename(dirname(err.socketPath));
    return `instance ${instance}: ${err.message}; \`tether down ${instance}\` stops it (with SIGKILL when it must)`;
  }
  if (err instanceof ConfigError) return err.problems.map((p) => p.message).join('\n');
  if (err instanceof Error) return systemError(err as NodeJS.ErrnoException) ?? err.message;
  return String(err);
}

/**
 * A file system error that escaped a command (`ENOTDIR: not a directory, stat '/dev/null/dev/logs'`) in tether's
 * words: what could not be done to which path, and TETHER_HOME when the path is under it (the usual cause).
 */
function systemError(err: NodeJS.ErrnoException): string | null {
  if (!err.code || !err.syscall || !err.path) return null;
  const why = /^[A-Z]+: ([^,]+),/.exec(err.message)?.[1] ?? err.code;
  const home = tetherHome();
  const under = err.path === home || err.path.startsWith(`${home}/`) ? `; TETHER_HOME is ${home}` : '';
  return `cannot ${SYSCALL_WORDS[err.syscall] ?? err.syscall} ${err.path}: ${why} (${err.code})${under}`;
}

/** Node's syscall names that are not words a user reads as what failed. */
const SYSCALL_WORDS: Record<string, string> = { scandir: 'list', lstat: 'stat', realpath: 'resolve' };

function exitCodeOf(err: unknown): number {
  return err instanceof CliError ? err.exitCode : EXIT_FAILURE;
}

export function reportError(err: unknown): number {
  if (err instanceof ExitStatus) return err.exitCode;
  complain(`tether: ${describeError(err)}\n`);
  if (process.env.TETHER_DEBUG === '1' && err instanceof Error && err.stack) complain(`${err.stack}\n`);
  return exitCodeOf(err);
}
