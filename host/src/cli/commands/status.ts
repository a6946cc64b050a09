// `tether status NAME`: the agent's connection state, guest agent, requirements, forward and mount summary, last
// errors. A stopped instance is reported as such (exit 0): status describes, it does not judge — see `doctor`.
import type { Command } from 'commander';
import { AgentNotRunningError } from '../../control/client.js';
import { isAlive, isOurAgent, readPid } from '../../instance.js';
import { countStates, FORWARD_STATES, MOUNT_STATES, type StoppedStatusView } from '../../model.js';
import { sshTarget } from '../../ssh/target.js';
import { otherBuild } from '../../version.js';
import { clientFor, existingInstance, withHelp } from '../context.js';
import { CliError } from '../errors.js';
import { endedWithoutStop, lastRun } from '../log-reader.js';
import { problemLine, statusText } from '../render.js';
import { configEditNote } from '../served-config.js';
import { say, sayJson } from '../terminal.js';

export function registerStatus(program: Command): void {
  withHelp(
    program
      .command('status')
      .description('show the state of an instance: connection, guest agent, requirements, forwards, mounts, errors')
      .argument('<name>', 'instance name')
      .option('--json', 'print the status object (JSON)'),
    ['tether status dev', 'tether status dev --json | jq .ssh.state'],
  ).action(async (name: string, opts: { json?: boolean }) => {
    const paths = existingInstance(name);
    try {
      const s = await clientFor(paths).status();
      if (opts.json) sayJson(s, 2);
      else {
        const configEdited = await configEditNote(paths, s.startedAt);
        say(`${statusText(s, { staleBuild: otherBuild(s.build), configEdited })}\n`);
      }
    } catch (err) {
      if (!(err instanceof AgentNotRunningError)) throw err;
      // Its process runs but the control API does not answer (still starting, or hung): not stopped.
      const pid = readPid(paths);
      if (pid !== null && isAlive(pid) && isOurAgent(pid, paths) !== false)
        throw new CliError(
          `instance ${name}: its agent (pid ${pid}) runs but does not answer on ${paths.socket} (starting, or hung); ` +
            `try again, or \`tether down ${name}\` stops it`,
        );
      const { loadConfig } = await import('../../config/load.js'); // only for a stopped instance
      // A config that does not load does not hide the last run: both are what the user needs to start it again.
      let ssh: string | null = null;
      let socket: string | null = null;
      let configError: string | null = null;
      try {
        const c = loadConfig(paths.config);
        ssh = sshTarget(c.ssh);
        socket = c.guestAgent.socket;
      } catch (e) {
        configError = (e as Error).message.split('\n').join('; ');
      }
      // Why it is not running, as far as its last run's log tells.
      const last = lastRun(paths.logs, name);
      // A pid file left by an agent that is gone: it did not stop (a clean stop removes it), even when its log has
      // rotated past the start of its run.
      if (last.stopReason === null && pid !== null && !isAlive(pid))
        last.stopReason = `its agent (pid ${pid}) ended without stopping: ${endedWithoutStop(paths.logs)}`;
      if (opts.json) {
        const stopped: StoppedStatusView = {
          name,
          pid: null,
          startedAt: null,
          build: null,
          state: 'stopped',
          ssh: { target: ssh, state: 'closed', since: null, lastError: null, reconnects: 0 },
          ...(configError ? { configError } : {}),
          guest: null,
          link: {
            up: false,
            lastError: null,
            outdated: null,
            socket: last.guestSocket ?? socket,
            guestStopping: null,
            provisioning: false,
            provisionStep: null,
            provisionError: null,
            restartAt: null,
          },
          stopReason: last.stopReason,
          requirements: [],
          forwards: { ...countStates(FORWARD_STATES, []), capped: 0 },
          mounts: countStates(MOUNT_STATES, []),
          mountStates: [],
          lastErrors: last.errors,
          logFile: paths.currentLog,
        };
        sayJson(stopped, 2);
      } else {
        const lines = [
          `instance:     ${name}`,
          configError
            ? `state:        stopped (fix its config, then \`tether up ${name}\`)`
            : `state:        stopped (start it with \`tether up ${name}\`)`,
          ...(configError ? [`config:       does not load: ${configError}`] : [`ssh:          ${ssh}`]),
        ];
        if (last.stopReason) lines.push(`last run:     stopped: ${last.stopReason}`);
        if (last.errors.length > 0) {
          lines.push('last errors:');
          for (const e of last.errors) lines.push(problemLine(e));
        }
        lines.push(`log:          ${paths.currentLog}`);
        say(`${lines.join('\n')}\n`);
      }
      if (configError)
        throw new CliError(`instance ${name}: ${paths.config} does not load; fix it before \`tether up ${name}\``);
    }
  });
}
