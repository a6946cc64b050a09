#!/usr/bin/env node
// tether-guest command line: run the agent, list ports, install/uninstall the systemd service, print the version.
// Owns argument parsing and exit codes (0 ok, 1 error with one line on stderr); the work lives in cli/ and agent/.
import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_SOCKET_PATH } from './agent/socket.js';
import { install, uninstall } from './cli/install.js';
import { printPorts } from './cli/ports.js';
import { runAgent } from './cli/run.js';
import { isLogLevel, Logger, type LogLevel } from './log.js';
import { BUILD_HASH, VERSION } from './version.js';

function parseLevel(value: string): LogLevel {
  if (!isLogLevel(value)) throw new InvalidArgumentError('expected debug, info, warn, error or silent');
  return value;
}

function fail(err: unknown): never {
  process.stderr.write(`tether-guest: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

/** Wraps an action so that any error ends the process with one clear line and exit code 1. */
function guarded<A extends unknown[]>(action: (...args: A) => unknown): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await action(...args);
    } catch (err) {
      fail(err);
    }
  };
}

const program = new Command('tether-guest').description(
  'tether guest agent: reports listening ports, relays UDP and applies file events for the host',
);

program
  .command('run')
  .description('run the agent in the foreground (JSON logs on stdout)')
  .option('--socket <path>', 'unix socket to serve on', DEFAULT_SOCKET_PATH)
  .option('--socket-owner <user>', 'user who may connect to the socket besides root')
  .option('--log-level <level>', 'debug, info, warn, error or silent', parseLevel, 'info' as LogLevel)
  .option('--no-listen-events', "find listeners by polling alone, not also on the kernel's listen events (tracefs)")
  .action(
    guarded(async (opts: { socket: string; socketOwner?: string; logLevel: LogLevel; listenEvents: boolean }) => {
      await runAgent(opts, new Logger(opts.logLevel, { component: 'agent' }));
    }),
  );

program
  .command('ports')
  .description('scan the listening ports once and print them')
  .option('--json', 'print JSON instead of a table')
  .action(guarded((opts: { json?: boolean }) => printPorts(opts.json === true)));

program
  .command('install')
  .description('install and start the systemd service (idempotent)')
  .requiredOption('--socket-owner <user>', 'user who may connect to the socket besides root (the SSH login user)')
  .option('--socket <path>', 'unix socket to serve on')
  .option('--restart', 'restart the service even when nothing changed (e.g. its socket does not answer)')
  .action(
    guarded((opts: { socketOwner: string; socket?: string; restart?: boolean }) => {
      const result = install({ socketOwner: opts.socketOwner, socketPath: opts.socket, restart: opts.restart });
      process.stdout.write(`${result.changed ? 'installed' : 'up to date'}: ${result.unitPath} → ${result.execPath}\n`);
    }),
  );

program
  .command('uninstall')
  .description('stop and remove the systemd service and the installed executable')
  .action(guarded(() => uninstall()));

program
  .command('version')
  .description('print the version and build hash')
  .action(() => {
    process.stdout.write(`${VERSION} ${BUILD_HASH}\n`);
  });

program.parseAsync(process.argv).catch(fail);
