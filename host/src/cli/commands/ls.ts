// `tether ls`: every instance under $TETHER_HOME with its SSH target, agent state, forwards and mounts.
import type { Command } from 'commander';
import type { LoadedConfig } from '../../config/load.js';
import { AgentNotRunningError } from '../../control/client.js';
import { instancePaths, isAlive, listInstances, readPid, tetherHome } from '../../instance.js';
import type { StatusView } from '../../model.js';
import { deniedAt, runAsOwner } from '../../owner.js';
import { sshTarget } from '../../ssh/target.js';
import { clientFor, withHelp } from '../context.js';
import { table } from '../render.js';
import { say, sayJson } from '../terminal.js';

interface InstanceRow {
  name: string;
  ssh: string | null;
  state: string;
  pid: number | null;
  forwards: { total: number; forwarding: number; ignored: number } | null;
  mounts: { total: number; mounted: number } | null;
  dir: string;
  error: string | null;
}

async function describe(name: string, loadConfig: (file: string) => LoadedConfig): Promise<InstanceRow> {
  const paths = instancePaths(name);
  const row: InstanceRow = {
    name,
    ssh: null,
    state: 'stopped',
    pid: null,
    forwards: null,
    mounts: null,
    dir: paths.dir,
    error: null,
  };
  const denied = deniedAt(paths.config);
  if (denied) {
    // Another user's instance: neither its config nor its agent can be looked at from here.
    row.state = 'not readable';
    row.error = runAsOwner(denied);
    return row;
  }
  try {
    const c = loadConfig(paths.config);
    row.ssh = sshTarget(c.ssh);
  } catch (err) {
    row.state = 'invalid config';
    row.error = (err as Error).message.split('\n')[0];
  }
  let s: StatusView;
  try {
    s = await clientFor(paths, 3_000).status();
  } catch (err) {
    if (!(err instanceof AgentNotRunningError)) {
      row.state = 'not answering';
      row.error = (err as Error).message;
      // The agent that holds the socket but does not answer (stopped, stuck) is still the one ha.pid names.
      const pid = readPid(paths);
      row.pid = pid !== null && isAlive(pid) ? pid : null;
    }
    return row;
  }
  row.state = s.state;
  row.pid = s.pid;
  row.ssh = s.ssh.target;
  row.forwards = { total: s.forwards.total, forwarding: s.forwards.forwarding, ignored: s.forwards.ignored };
  row.mounts = { total: s.mounts.total, mounted: s.mounts.mounted };
  return row;
}

export function registerLs(program: Command): void {
  withHelp(
    program
      .command('ls')
      .alias('list')
      .description('list instances: SSH target, state, forwards, mounts')
      .option('--json', 'print a JSON array'),
    ['tether ls', 'tether ls --json | jq -r ".[].name"'],
  ).action(async (opts: { json?: boolean }) => {
    const { loadConfig } = await import('../../config/load.js'); // each instance's SSH target
    const rows = await Promise.all(listInstances().map((name) => describe(name, loadConfig)));
    if (opts.json) {
      sayJson(rows, 2);
      return;
    }
    if (rows.length === 0) {
      say(`no instances in ${tetherHome()}; create one with \`tether up NAME --ssh USER@HOST:PORT\`\n`);
      return;
    }
    const cells = rows.map((r) => [
      r.name,
      r.ssh ?? '-',
      r.state,
      // Out of those meant to forward: the guest's sshd and ignored ports would make "0/3" of an idle VM.
      r.forwards ? `${r.forwards.forwarding}/${r.forwards.total - r.forwards.ignored}` : '-',
      r.mounts ? `${r.mounts.mounted}/${r.mounts.total}` : '-',
    ]);
    say(`${table(['NAME', 'SSH', 'STATE', 'FORWARDS', 'MOUNTS'], cells)}\n`);
  });
}
