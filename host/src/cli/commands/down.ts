// `tether down NAME`: stops the instance's host agent (../agent-stop.ts) and says how.
import type { Command } from 'commander';
import { stopAgent } from '../agent-stop.js';
import { existingInstance, withHelp } from '../context.js';
import { say } from '../terminal.js';

export function registerDown(program: Command): void {
  withHelp(
    program
      .command('down')
      .description('stop the host agent of a VM (forwards and mounts go away; the VM keeps running)')
      .argument('<name>', 'instance name'),
    ['tether down dev'],
  ).action(async (name: string) => {
    const paths = existingInstance(name);
    const how = await stopAgent(paths, 'tether down');
    say(how === 'not running' ? `instance ${name} is not running\n` : `stopped instance ${name} (${how})\n`);
  });
}
