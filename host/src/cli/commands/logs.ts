// `tether logs NAME`: the agent's log lines, pretty (pino-pretty) or raw JSON, filtered by component and level,
// the last N, and following across rotation with -f. Works whether or not the agent runs.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { COMPONENTS } from '../../log-names.js';
import { existingInstance, parsePositiveInt, withHelp } from '../context.js';
import { prettyRecord } from '../log-pretty.js';
import { follow, type LogFilter, levelNumber, tail } from '../log-reader.js';
import { complain, inertJson, inertValues, say } from '../terminal.js';

interface LogsOptions {
  follow?: boolean;
  lines: number;
  component?: string[];
  level?: number;
  json?: boolean;
}

function parseLevel(value: string): number {
  const n = levelNumber(value);
  if (n === null) throw new InvalidArgumentError('expected trace, debug, info, warn, error or fatal');
  return n;
}

function collectComponents(value: string, previous: string[] = []): string[] {
  const names = value.split(',').filter(Boolean);
  const unknown = names.filter((c) => !(COMPONENTS as readonly string[]).includes(c));
  if (unknown.length)
    throw new InvalidArgumentError(`unknown component ${unknown.join(', ')}; expected one of ${COMPONENTS.join(', ')}`);
  return [...previous, ...names];
}

export function registerLogs(program: Command): void {
  withHelp(
    program
      .command('logs')
      .description('show the host agent log (pretty by default); follows rotation with -f')
      .argument('<name>', 'instance name')
      .option('-f, --follow', 'keep printing new lines (Ctrl-C to stop)')
      .option('-n, --lines <n>', 'show the last N lines', parsePositiveInt, 100)
      .option(
        '--component <c>',
        `only these components: ${COMPONENTS.join(', ')} (repeat or comma-separate)`,
        collectComponents,
      )
      .option('--level <level>', 'only this level and above (trace, debug, info, warn, error, fatal)', parseLevel)
      .option('--json', 'raw JSON lines instead of pretty ones'),
    [
      'tether logs dev -n 50',
      'tether logs dev -f --component forward,link',
      'tether logs dev --level warn --json | jq .msg',
    ],
  ).action(async (name: string, opts: LogsOptions) => {
    const paths = existingInstance(name);
    const { prettyFactory } = await import('pino-pretty');
    const filter: LogFilter = { components: opts.component, minLevel: opts.level };
    const pretty = prettyFactory({
      colorize: process.stdout.isTTY === true,
      translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
      ignore: 'pid,hostname,component',
      messageFormat: '[{component}] {msg}',
      singleLine: true,
      errorLikeObjectKeys: ['err'],
    });
    const print = (line: string) => {
      if (opts.json) process.stdout.write(`${inertJson(line)}\n`);
      else {
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          say(`${line}\n`);
          return;
        }
        // The record's strings, not the pretty line: its colours are escape sequences of its own.
        process.stdout.write(
          pretty(
            inertValues(rec !== null && typeof rec === 'object' ? prettyRecord(rec as Record<string, unknown>) : rec),
          ),
        );
      }
    };
    const result = tail(paths.logs, filter, opts.lines);
    if (result.lines.length === 0 && !opts.follow && result.file === null)
      complain(`no log files in ${paths.logs} yet (the agent has not run)\n`);
    for (const line of result.lines) print(line);
    if (!opts.follow) return;
    const stop = follow(paths.logs, result, filter, print);
    return new Promise<void>((resolve) =>
      process.once('SIGINT', () => {
        stop();
        resolve();
      }),
    );
  });
}
