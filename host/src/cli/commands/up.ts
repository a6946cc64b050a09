// `tether up NAME`: creates the instance on first use (tether.yaml from the flags), starts the host agent detached in
// the background (or in this process with --foreground), and follows the boot requirements until the VM is ready
// (../up.ts).
import type { Command } from 'commander';
import { parseLogLevel, parseSeconds, withHelp } from '../context.js';
import type { UpOptions } from '../up.js';

const DEFAULT_TIMEOUT_S = 300;

export function registerUp(program: Command): void {
  withHelp(
    program
      .command('up')
      .description('create (first time) and start the host agent of a VM, and wait until it is ready')
      .argument('<name>', 'instance name ([a-z0-9][a-z0-9._-]*)')
      .option('--ssh <[user@]host[:port]>', 'how to reach the VM (written to tether.yaml; default user: you)')
      .option('-i, --identity <file>', 'SSH private key (ssh.identityFile)')
      .option('-c, --config <file>', 'use this tether.yaml (copied into the instance directory)')
      .option('--foreground', 'run the agent in this process (for systemd, launchd and tests)')
      .option('--timeout <seconds>', 'how long to wait for the requirements', parseSeconds, DEFAULT_TIMEOUT_S)
      .option('--log-level <level>', 'agent log level (trace, debug, info, warn, error, fatal)', parseLogLevel),
    [
      'tether up dev --ssh me@127.0.0.1:2222 -i ~/.ssh/id_ed25519',
      'tether up dev                    # start an existing instance',
      'tether up dev -c ./tether.yaml   # replace the config, then start',
      'tether up dev --foreground       # stay attached; Ctrl-C stops the agent',
    ],
  ).action(async (name: string, opts: UpOptions) => {
    // The implementation (config validation, the agent's modules) loads only when `up` runs: the other commands
    // start faster without it.
    const { up } = await import('../up.js');
    await up(name, opts);
  });
}
