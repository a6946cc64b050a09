// `tether doctor NAME`: runs every check and prints ✓/✗ per link with the fix (or all of them as JSON); exits 1 when
// anything is wrong.
import type { Command } from 'commander';
import { existingInstance, withHelp } from '../context.js';
import type { CheckResult } from '../doctor.js';
import { CliError } from '../errors.js';
import { say, sayJson } from '../terminal.js';

/** A check as shown: the fix names the instance. */
function shown(r: CheckResult, name: string): CheckResult {
  return r.fix ? { ...r, fix: r.fix.replaceAll('NAME', name) } : r;
}

function line(r: CheckResult): string {
  const mark = { ok: '✓', warn: '!', fail: '✗', skip: '-' }[r.state];
  return `${mark} ${r.name}: ${r.detail}${r.fix ? `\n    fix: ${r.fix}` : ''}`;
}

export function registerDoctor(program: Command): void {
  withHelp(
    program
      .command('doctor')
      .description(
        'check each link (config, agent, ssh, host key, guest agent, scanner, mounts, host ports) and say how to fix what is wrong',
      )
      .argument('<name>', 'instance name')
      .option(
        '--json',
        'print the checks as one JSON array of {name, state, detail, fix} (state: ok, warn, fail, skip)',
      ),
    ['tether doctor dev', 'tether doctor dev --json | jq \'.[] | select(.state == "fail")\''],
  ).action(async (name: string, opts: { json?: boolean }) => {
    const paths = existingInstance(name);
    const { runChecks } = await import('../doctor.js'); // ssh2 and the mount checks load only here
    const report = (r: CheckResult) => {
      if (!opts.json) say(`${line(shown(r, name))}\n`);
    };
    const results = (await runChecks(paths, report)).map((r) => shown(r, name));
    if (opts.json)
      sayJson(
        results.map((r) => ({ name: r.name, state: r.state, detail: r.detail, fix: r.fix ?? null })),
        2,
      );
    const failed = results.filter((r) => r.state === 'fail');
    // The exit code says it with --json too; the summary line is for people.
    if (failed.length > 0)
      throw new CliError(
        `${failed.length} problem${failed.length > 1 ? 's' : ''}: ${failed.map((r) => r.name).join(', ')}`,
      );
    if (opts.json) return;
    const warned = results.filter((r) => r.state === 'warn').length;
    say(warned ? `no problems; ${warned} warning${warned > 1 ? 's' : ''} above\n` : 'everything looks right\n');
  });
}
