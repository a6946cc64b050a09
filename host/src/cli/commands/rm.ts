// `tether rm NAME [--force]`: forgets an instance by removing its directory ($TETHER_HOME/NAME: tether.yaml, the
// pinned host key, logs), with or without its tether.yaml. A running host agent is stopped first only with --force, as `limactl delete` does: without
// it, rm would pull the config and control socket out from under a live agent. The VM is not touched: its guest
// agent stays installed, and `tether up NAME --ssh …` later starts over (pinning the host key again).
import { constants, existsSync, rmSync } from 'node:fs';
import type { Command } from 'commander';
import { type InstancePaths, instanceExists, isAlive, isOurAgent, readPid } from '../../instance.js';
import { deniedAt, runAsOwner } from '../../owner.js';
import { socketAnswers } from '../../socket-file.js';
import { stopAgent } from '../agent-stop.js';
import { existingInstance, pathsFor, withHelp } from '../context.js';
import { CliError } from '../errors.js';
import { say } from '../terminal.js';

/** What only a tether instance directory holds: one of them makes a directory without tether.yaml an instance. */
const INSTANCE_MARKS = (paths: InstancePaths) => [paths.logs, paths.hostKey, paths.pidFile];

export function registerRm(program: Command): void {
  withHelp(
    program
      .command('rm')
      .alias('delete')
      .description('forget an instance: remove its directory (config, pinned host key, logs); the VM is not touched')
      .argument('<name>', 'instance name')
      .option('-f, --force', 'stop its host agent first when it runs'),
    ['tether rm dev', 'tether rm --force dev'],
  ).action(async (name: string, opts: { force?: boolean }) => {
    // A directory without its tether.yaml (a first `up` given a config it could not use, a file removed by hand) is
    // still the instance's: rm cleans it up rather than saying there is nothing to remove.
    const paths = pathsFor(name);
    if (!existsSync(paths.dir)) existingInstance(name);
    if (!instanceExists(paths) && !INSTANCE_MARKS(paths).some((p) => existsSync(p)))
      throw new CliError(
        `${paths.dir} has no tether.yaml, log directory, pinned host key or pid file: not a tether instance, not removed`,
      );
    // An agent of another user (`sudo tether up` on this user's instance): its pid and socket cannot be used from
    // here, so it would look stopped, and rm would pull its directory from under it.
    const foreign = deniedAt(paths.pidFile) ?? deniedAt(paths.socket, constants.W_OK);
    if (foreign && (existsSync(paths.pidFile) || existsSync(paths.socket)))
      throw new CliError(
        `instance ${name} has an agent of another user, or its files: ${runAsOwner(foreign)} to stop it (tether down ${name}), then tether rm ${name}`,
      );
    const pid = readPid(paths);
    const running =
      (pid !== null && isAlive(pid) && isOurAgent(pid, paths) === true) || (await socketAnswers(paths.socket));
    if (running) {
      if (!opts.force)
        throw new CliError(`instance ${name} is running; stop it with \`tether down ${name}\` first, or use --force`);
      const how = await stopAgent(paths, 'tether rm --force');
      say(`stopped instance ${name} (${how})\n`);
    }
    rmSync(paths.dir, { recursive: true, force: true });
    say(`removed instance ${name} (${paths.dir})\n`);
  });
}
