// `tether mount ls NAME`: the instance's mounts (host location → guest mount point, driver, mode, state, inotify).
import type { Command } from 'commander';
import { clientFor, existingInstance, withHelp } from '../context.js';
import { mountTable } from '../render.js';
import { say, sayJson, terminalWidth } from '../terminal.js';

export function registerMount(program: Command): void {
  const mount = withHelp(program.command('mount').description('host directories mounted in the guest'), [
    'tether mount ls dev',
  ]);
  withHelp(
    mount
      .command('ls')
      .alias('list')
      .description('list the mounts of an instance')
      .argument('<name>', 'instance name')
      .option('--json', 'print a JSON array'),
    ['tether mount ls dev', 'tether mount ls dev --json'],
  ).action(async (name: string, opts: { json?: boolean }) => {
    const mounts = await clientFor(existingInstance(name)).mounts();
    if (opts.json) sayJson(mounts, 2);
    else if (mounts.length === 0) say('no mounts (tether.yaml has mounts: [])\n');
    else say(`${mountTable(mounts, terminalWidth())}\n`);
  });
}
