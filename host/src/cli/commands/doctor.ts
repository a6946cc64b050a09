// `tether doctor NAME`: runs every check and prints ✓/✗ per link with the fix; exits 1 when anything is wrong.
import type { Command } from 'commander';
import { existingInstance, withHelp } from '../context.js';
import type { CheckResult } from '../doctor.js';
import { CliError } from '../errors.js';
import { say } from '../terminal.js';

function line(r: CheckResult, name: string): string {
  const mark = { ok: '✓', warn: '!', fail: '✗', skip: '-' }[r.state];
  const fix = r.fix ? `\n    fix: ${r.fix.replaceAll('NAME', name)}` : '';
  return `${mark} ${r.name}: ${r.detail}${fix}`;
}

export function registerDoctor(program: Command): void {
  withHelp(
    program
      .command('doctor')
      .description(
        'check each link (config, agent, ssh, host key, guest agent, scanner, mounts, host ports) and say how to fix what is wrong',
      )
      .argument('<name>', 'instance name'),
    ['tether doctor dev'],
  ).action(async (name: string) => {
    const paths = existingInstance(name);
    const { runChecks } = await import('../doctor.js'); // ssh2 and the mount checks load only here
    const results = await runChecks(paths, (r) => say(`${line(r, name)}\n`));
    const failed = results.filter((r) => r.state === 'fail');
    if (failed.length > 0)
      throw new CliError(
        `${failed.length} problem${failed.length > 1 ? 's' : ''}: ${failed.map((r) => r.name).join(', ')}`,
      );
    const warned = results.filter((r) => r.state === 'warn').length;
    say(warned ? `no problems; ${warned} warning${warned > 1 ? 's' : ''} above\n` : 'everything looks right\n');
  });
}
