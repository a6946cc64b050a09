// Usage errors read like every other error of tether's: one line, `tether: …`, saying where the usage is.
import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram, usageLine } from './program.js';

/** What `tether ARGS…` writes to stderr for a usage error, with the error commander raised. */
async function usageError(...args: string[]): Promise<{ stderr: string; err: unknown }> {
  const program = buildProgram();
  let stderr = '';
  const all = (c: typeof program): (typeof program)[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) c.configureOutput({ writeErr: (s) => (stderr += s), writeOut: () => {} });
  const err = await program.parseAsync(['node', 'tether', ...args]).catch((e: unknown) => e);
  return { stderr, err };
}

describe('usage errors', () => {
  it('are one line naming the help of the command that was mistyped', async () => {
    const missing = await usageError('forward', 'add');
    expect(missing.err).toBeInstanceOf(CommanderError);
    expect(missing.stderr).toBe("tether: missing required argument 'name' (see `tether forward add --help`)\n");
    const unknown = await usageError('bogus');
    expect(unknown.stderr).toBe("tether: unknown command 'bogus'; did you mean logs? (see `tether --help`)\n");
    const level = await usageError('up', 'dev', '--log-level', 'loud');
    expect(level.stderr).toMatch(
      /^tether: option '--log-level <level>' argument 'loud' is invalid\..* \(see `tether up --help`\)\n$/,
    );
  });

  it('keep commander’s text when it has no prefix or second line', () => {
    expect(usageLine('too many arguments\n', 'see `tether ls --help`')).toBe(
      'tether: too many arguments (see `tether ls --help`)\n',
    );
  });
});
