#!/usr/bin/env node
// `tether`: runs the command tree and maps outcomes to exit codes (0 ok, 1 failure, 2 usage); errors are one line on
// stderr (a stack trace only with TETHER_DEBUG=1).
import { CommanderError } from 'commander';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, reportError } from './errors.js';
import { buildProgram } from './program.js';
import { complain } from './terminal.js';

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed the message (or the help/version). Help asked for exits 0; help shown because a
      // command is missing (`tether forward`) is a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    return reportError(err);
  }
}

// A reader that went away (`tether doctor | head -3`) ends the command quietly, as it does for other CLI tools.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(EXIT_OK);
  throw err;
});

main(process.argv).then(
  (code) => {
    // The command is done: exit without waiting for stray handles, once stdout has been flushed (pipes are
    // asynchronous on macOS).
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    complain(`tether: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT_FAILURE);
  },
);
