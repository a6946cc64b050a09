// The `tether` command tree (commander): every subcommand registered here; main.ts runs it. Separate from main.ts so
// tests can build the program without running it.
import { Command } from 'commander';
import { VERSION } from '../version.js';
import { registerDoctor } from './commands/doctor.js';
import { registerDown } from './commands/down.js';
import { registerForward } from './commands/forward.js';
import { registerLogs } from './commands/logs.js';
import { registerLs } from './commands/ls.js';
import { registerMount } from './commands/mount.js';
import { registerRm } from './commands/rm.js';
import { registerShell } from './commands/shell.js';
import { registerStatus } from './commands/status.js';
import { registerUp } from './commands/up.js';
import { withHelp } from './context.js';

export function buildProgram(): Command {
  const program = new Command('tether')
    .description(
      'Connect a Linux VM to this host over SSH: guest ports appear on localhost, host directories are mounted in the guest.\n' +
        'Instances live in $TETHER_HOME (default ~/.tether), one directory per VM.',
    )
    .version(VERSION, '-V, --version')
    .exitOverride()
    // `tether shell dev ls -V`: options after a command are its own, not tether's --version.
    .enablePositionalOptions()
    .configureHelp({ sortSubcommands: false });
  withHelp(program, [
    'tether up dev --ssh me@127.0.0.1:2222 -i ~/.ssh/id_ed25519',
    'tether forward ls dev',
    'tether logs dev -f',
    'tether doctor dev',
    'tether down dev',
  ]);
  registerUp(program);
  registerDown(program);
  registerRm(program);
  registerLs(program);
  registerStatus(program);
  registerForward(program);
  registerMount(program);
  registerShell(program);
  registerLogs(program);
  registerDoctor(program);
  // Subcommands inherit exitOverride so usage errors come back to main.ts as CommanderErrors.
  for (const cmd of [program, ...allCommands(program)]) {
    const help = `see \`${commandPath(cmd)} --help\``;
    cmd.exitOverride().configureOutput({ outputError: (str, write) => write(usageLine(str, help)) });
  }
  return program;
}

/**
 * A usage error as one line like every other error of tether's: commander's `error: …` (and its "Did you mean"
 * line) with where to read the usage.
 */
export function usageLine(commanderMessage: string, help: string): string {
  const text = commanderMessage
    .replace(/^error: /, '')
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const more = text.slice(1).map((l) => {
    const bare = l.replace(/^\((.*)\)$/, '$1');
    return `; ${bare.charAt(0).toLowerCase()}${bare.slice(1)}`;
  });
  return `tether: ${text[0]}${more.join('')} (${help})\n`;
}

/** `tether forward add`: the command as the user types it. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}
