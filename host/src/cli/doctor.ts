// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';
import net from 'node:net';
import { type Info, Peer, ProtocolVersionError } from '@tether/protocol';
import { Client, type ClientChannel, type ConnectConfig } from 'ssh2';
import { portOfAddr } from '../address.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { GuestAgentConfig } from '../config/schema.js';
import { AgentAccessError, AgentNotRunningError } from '../control/client.js';
import { unprivilegedPort, unprivilegedSpec } from '../forward/privileged.js';
import { type InstancePaths, isAlive, readPid } from '../instance.js';
import { greet } from '../link/index.js';
import {
  CONFIG_ONLY_CAUSES,
  type ForwardView,
  type GuestView,
  isGuestServiceBelow1024,
  type MountCause,
  type MountView,
  type StatusView,
  waitsForGuestService,
} from '../model.js';
import { checkMountRequirements, findSftpServer } from '../mount/index.js';
import { deniedAt } from '../owner.js';
import { defaultBundleDir, outdatedAgent, runningAgentSocket } from '../provision/index.js';
import { BannerWatch } from '../ssh/banner.js';
import { execOn } from '../ssh/exec.js';
import { type Credentials, credentials } from '../ssh/identity.js';
import {
  authorizedKeyFix,
  describeKey,
  type HostKey,
  readPinned,
  sshdForwardingFix,
  streamLocalRefusal,
} from '../ssh/index.js';
import { loginShellCommand } from '../ssh/shell-quote.js';
import { sshTarget } from '../ssh/target.js';
import { unrunScript } from '../ssh/unrun-script.js';
import { HOST_AGENT_NAME, otherBuild } from '../version.js';
import { clientFor } from './context.js';
import { cappedListeners, countOf, linkDownReason } from './render.js';
import { sameConfig, servedConfig } from './served-config.js';
import { describeSiblings, runningSiblings, type Sibling } from './siblings.js';

export interface CheckResult {
  name: string;
  /** `warn`: worth knowing and fixing, but tether works (doctor still exits 0). */
  state: 'ok' | 'warn' | 'fail' | 'skip';
  detail: string;
  fix?: string;
}

const ok = (name: string, detail: string): CheckResult => ({ name, state: 'ok', detail });
const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, state: 'fail', detail, fix });
const warn = (name: string, detail: string, fix: string): CheckResult => ({ name, state: 'warn', detail, fix });
const skip = (name: string, detail: string): CheckResult => ({ name, state: 'skip', detail });

export async function runChecks(paths: InstancePaths, report: (r: CheckResult) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const add = (r: CheckResult) => {
    results.push(r);
    report(r);
    return r;
  };

  let config: LoadedConfig;
  // A running agent keeps the config it started with: the checks are of that one, whatever the file says now.
  const served = await servedConfig(paths);
  try {
    config = loadConfig(paths.config);
    if (served && !sameConfig(config, served)) {
      add(
        warn(
          'config',
          `${paths.config} is valid but is not what the running agent started with; the checks below use the agent's`,
          `tether down ${paths.name} && tether up ${paths.name} applies the file`,
        ),
      );
      config = served;
    } else add(ok('config', `${paths.config} is valid`));
  } catch (err) {
    const problem = (err as Error).message.split('\n').join('; ');
    if (!served) {
      const denied = deniedAt(paths.config);
      add(fail('config', problem, denied ? `as ${denied.owner}: tether doctor ${paths.name}` : `edit ${paths.config}`));
      return results;
    }
    add(
      fail(
        'config',
        problem,
        `edit ${paths.config}; the running agent keeps the config it started with, and the checks below use that one`,
      ),
    );
    config = served;
  }

  /** Why mounts are not mounted, as the guest's mount requirements above already said it with the fix. */
  const explained = new Set<MountCause>();
  const agent = await settledAgent(paths, config.guestAgent.provision);
  add(agent.result);
  if (agent.staleBuild)
    add(warn('host agent build', agent.staleBuild, `tether down ${paths.name} && tether up ${paths.name}`));
  // A link that is down is reported after the guest agent's own check: an agent restarting meanwhile (20 s on an
  // emulated guest) answers there, and the link it comes back on is then what there is to say.
  let linkReported = !agent.link;
  const reportLink = async (guestAnswers: boolean) => {
    if (linkReported || !agent.link) return;
    linkReported = true;
    add(guestAnswers ? ((await linkBack(paths)) ?? agent.link) : agent.link);
  };
  const siblings = await runningSiblings(paths, config.ssh, loadConfig);
  const sameVm = `${describeSiblings(siblings)}: the same VM, whose guest ports and mount points it already serves`;
  add(
    siblings.length === 0
      ? ok('other instances', `none runs against ${sshTarget(config.ssh)}`)
      : agent.forwards === null
        ? // This one is stopped: a spare, which only starting it would make a conflict.
          warn(
            'other instances',
            `${sameVm}; starting this one too would compete with it`,
            `use ${siblings[0].name}, or tether down ${siblings[0].name} before tether up ${paths.name}`,
          )
        : fail(
            'other instances',
            sameVm,
            `run one instance per VM: tether down ${siblings[0].name} (or tether rm --force ${paths.name}, if this one is the spare)`,
          ),
  );

  const ssh = await probeSsh(paths, config, agent.guestStopping === true);
  for (const r of ssh.results) add(r);

  if (!ssh.client && agent.guest) {
    // A new login fails (sshd stopped or refusing) while the agent's own connection still serves: what it sees of the
    // guest agent is what there is to tell.
    for (const r of seenByAgent(agent.guest)) add(r);
  } else if (!ssh.client) {
    for (const name of ['guest agent', 'port scanner']) add(skip(name, 'needs a working SSH login'));
  } else if (agent.provisioning) {
    // Looked at now, the guest would show what the running agent is fixing (an agent being uploaded, fuse.conf).
    const busy = 'the host agent is setting up the guest now; run doctor again once it is done';
    for (const name of ['guest agent', 'mount requirements']) add(skip(name, busy));
    ssh.client.end();
  } else {
    try {
      // Where the running agent found the guest agent (provisioning may have moved it to the user's own socket).
      const socket =
        agent.guestSocket ??
        (await runningAgentSocket(shellOn(ssh.client), config.guestAgent.socket, config.guestAgent.installDir));
      const guest = await checkGuestAgent(paths.name, ssh.client, config, socket, {
        provisionError: agent.provisionError ?? null,
        hostAgentRuns: agent.forwards !== null,
      });
      await reportLink(guest[0]?.state !== 'fail');
      for (const r of guest) add(r);
      if (config.mounts.length > 0) {
        const mountedByAgent = new Set(agent.mounts?.filter((m) => m.state === 'mounted').map((m) => m.mountPoint));
        const reqs = await checkMountRequirements(ssh.client, config.mounts, { fix: false, mountedByAgent });
        for (const r of reqs) if (!r.ok && r.cause) explained.add(r.cause);
        // The default mount of ~ is made when the guest can take it: what keeps it out is worth a warning only.
        const unmet = config.mountsDefaulted ? warn : fail;
        for (const r of reqs)
          add(
            r.ok ? ok(r.name, r.detail ?? 'ok') : unmet(r.name, r.detail ?? 'failed', r.fix ?? 'see the detail above'),
          );
      } else add(skip('mount requirements', 'no mounts configured'));
    } finally {
      ssh.client.end();
    }
  }

  const openssh = config.mounts.filter((m) => m.driver === 'openssh');
  if (openssh.length > 0) {
    const server = findSftpServer();
    add(
      server
        ? ok('sftp-server on the host', `${server} (driver openssh for ${openssh.map((m) => m.location).join(', ')})`)
        : fail(
            'sftp-server on the host',
            `no OpenSSH sftp-server found, but ${openssh.map((m) => m.location).join(', ')} uses driver openssh`,
            'install OpenSSH (Debian: apt install openssh-sftp-server) or set driver: builtin',
          ),
    );
  }

  await reportLink(false);
  servingChecks(paths.name, agent, siblings, add, config.mountsDefaulted, explained);
  return results;
}

/** How long doctor waits for the running agent's link to come back once the guest agent answers doctor itself. */
const LINK_BACK_WAIT_MS = 10_000;

/** An ok result once the running agent's link to the guest agent is up again (within LINK_BACK_WAIT_MS), else null. */
async function linkBack(paths: InstancePaths): Promise<CheckResult | null> {
  const deadline = Date.now() + LINK_BACK_WAIT_MS;
  for (;;) {
    const status = await clientFor(paths, 5_000)
      .status()
      .catch(() => null);
    if (status?.link?.up) return ok('guest agent link', 'up again (the guest agent came back while doctor ran)');
    if (!status || Date.now() >= deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** What the running agent serves: forwards that do not, mounts that are not mounted. Exported for its test. */
export function servingChecks(
  instance: string,
  agent: Pick<AgentCheck, 'forwards' | 'mounts' | 'capped'>,
  siblings: Sibling[],
  add: (r: CheckResult) => void,
  mountsDefaulted = false,
  /** Causes a failed mount requirement has reported already: the mounts they keep down are not listed again. */
  explained: ReadonlySet<MountCause> = new Set(),
): void {
  if (agent.forwards) {
    const bad = agent.forwards.filter((f) => f.state === 'conflict' || f.state === 'privileged' || f.state === 'error');
    // Ignored forwards take no host port: counting them would report ports that are not there.
    const ignored = agent.forwards.filter((f) => f.state === 'ignored').length;
    const suspended = agent.forwards.filter((f) => f.state === 'suspended').length;
    const held = countOf(agent.forwards.length - ignored, 'forward');
    // A suspended forward does not try its host port until the link is back: "none in conflict" would be a guess.
    if (suspended > 0 && bad.length === 0)
      add(
        skip(
          'host ports',
          `${held}, ${suspended} of them suspended while the link to the guest is down; their host ports are tried again once it is back`,
        ),
      );
    else if (bad.length === 0)
      add(ok('host ports', `${held}, none in conflict${ignored ? ` (${ignored} ignored)` : ''}`));
    for (const f of bad) add(forwardProblem(instance, f, siblings));
    if (agent.capped)
      add(
        warn(
          'forward cap',
          cappedListeners(agent.capped),
          'raise maxForwards in tether.yaml, or leave out ports with ignore rules in portForwards',
        ),
      );
  } else add(skip('host ports', 'the agent is not running, so no forwards exist'));
  if (agent.mounts && agent.mounts.length > 0) {
    const down = agent.mounts.filter((m) => m.state !== 'mounted');
    if (down.length === 0) add(ok('mounts', `${countOf(agent.mounts.length, 'mount')}, all mounted`));
    // The default mount of ~ is made when the guest can take it: one that is not is worth a warning only.
    for (const m of down)
      if (!(m.cause && explained.has(m.cause))) add(mountProblem(instance, m, mountsDefaulted ? 'warn' : 'fail'));
  }
}

/** What doctor says of a mount the running agent has not mounted, with where to look. Exported for its test. */
export function mountProblem(instance: string, m: MountView, severity: 'warn' | 'fail' = 'fail'): CheckResult {
  const detail = `${m.location} → ${m.guestPath ?? m.mountPoint} is ${m.state}${m.error ? `: ${m.error}` : ''}`;
  const fix =
    m.state === 'suspended' && m.cause === 'guest-stopping'
      ? 'it is mounted again once the guest is back from its shutdown (tether notices by itself)'
      : m.state === 'suspended' && m.cause === 'remounting'
        ? `being mounted again now; if it stays so, see \`tether logs ${instance} --component mount\``
        : m.state === 'suspended'
          ? 'it is mounted again once the SSH connection is back (see the ssh check above)'
          : m.cause !== null && CONFIG_ONLY_CAUSES.has(m.cause)
            ? // Retrying cannot help: the agent mounts what tether.yaml says, and only a new mountPoint changes it.
              `set another mountPoint for it in tether.yaml (mounts:), then \`tether down ${instance} && tether up ${instance}\``
            : `tether mount ls ${instance}; tether logs ${instance} --component mount; \`tether up ${instance}\` tries it again at once`;
  return (severity === 'warn' ? warn : fail)(`mount ${m.mountPoint}`, detail, fix);
}

/** What doctor says of a forward that is not serving, with the fix. Exported for its test. */
export function forwardProblem(instance: string, f: ForwardView, siblings: Sibling[] = []): CheckResult {
  const port = portOfAddr(f.hostAddrs[0]) ?? undefined;
  const name = `forward ${f.proto} guest ${f.guestAddr}`;
  // An error that names host addresses says which of them it is about (a port busy on 127.0.0.1 only, [::1] still
  // forwarding): prefixing every host address would put the forward in that state on all of them.
  const named = f.error !== null && f.hostAddrs.some((a) => f.error?.includes(a));
  const detail = named
    ? `${f.state}: ${f.error}`
    : `${f.state} on ${f.hostAddrs.join(', ')}${f.error ? `: ${f.error}` : ''}`;
  if (f.state === 'conflict') return fail(name, detail, conflictFix(instance, f, port, siblings));
  if (f.state === 'privileged') {
    // A guest system service (an MTA on 25, a DHCP client on 68) on its own port is no fault of the setup; a forward
    // asked for (forward add, a static rule, a rule that maps it to this port) is.
    return isGuestServiceBelow1024(f)
      ? warn(name, detail, `if you need it on the host, ${privilegedFix(instance, f, port)}`)
      : fail(name, detail, privilegedFix(instance, f, port));
  }
  // Its guest service is not running (docker not started yet): the forward serves once it is, by itself.
  if (waitsForGuestService(f))
    return warn(
      name,
      detail,
      `start the service in the guest that makes ${f.guestAddr} (e.g. sudo systemctl start docker for docker.sock): ` +
        `the forward serves once the socket is there; or \`tether forward rm ${instance} ${f.hostAddrs[0] ?? f.guestAddr}\``,
    );
  // The error names the cause and what to change (sshd's options, the guest socket's service or owner).
  const again = f.proto === 'unix' ? '; the forward looks at its guest socket again by itself' : '';
  return fail(
    name,
    detail,
    `as the detail says${again}; each attempt is in \`tether logs ${instance} --component forward\``,
  );
}

/**
 * The fix of a forward refused a host port below 1024: a host port the host user may bind, by `forward add` for now
 * (a detected or added forward) or by the portForwards rule that asks for the port (a static one).
 */
function privilegedFix(instance: string, f: ForwardView, port: number | undefined): string {
  const guestPort = portOfAddr(f.guestAddr) ?? undefined;
  if (port === undefined || guestPort === undefined) return 'map it to a host port ≥ 1024 with a portForwards rule';
  const hostPort = unprivilegedPort(port);
  const rule = `a portForwards rule with guestPort: ${guestPort} and hostPort: ${hostPort}${f.proto === 'udp' ? ', proto: udp' : ''}`;
  if (f.source === 'static') return `give its portForwards rule a host port ≥ 1024, e.g. hostPort: ${hostPort}`;
  const add = `tether forward add ${instance} ${unprivilegedSpec(f.proto, port, guestPort)}`;
  return `forward it from a host port ≥ 1024: \`${add}\` (until \`tether down\`), or ${rule} in tether.yaml`;
}

/** The fix of a forward in `conflict`, told by who holds its host port (heldBy). */
function conflictFix(instance: string, f: ForwardView, port: number | undefined, siblings: Sibling[]): string {
  const elsewhere = 'map it elsewhere with a portForwards rule (hostPort)';
  const held = f.heldBy;
  // Another of tether's own forwards: lsof would only show tether.
  if (held?.kind === 'forward')
    return `remove one of the two: tether forward rm ${instance} ${held.id}, or map this one elsewhere with a portForwards rule (hostPort)`;
  // A connection from the port (TIME-WAIT, an outgoing one) shows in no listing of listeners, and passes.
  if (held?.kind === 'connection')
    return `wait: tether binds it once the connection is gone (TIME-WAIT ends within a minute; see \`ss -tan sport = :${port}\` or \`netstat -an | grep ${port}\`), or ${elsewhere}`;
  const peer = held?.kind === 'instance' ? held : undefined;
  // An instance of the same VM forwards every port this one would: one of the two should go, not a port.
  const sameVm = peer ? siblings.find((s) => s.name === peer.instance) : siblings[0];
  if (sameVm)
    return peer
      ? `instance ${sameVm.name} forwards the same VM and holds this port: tether down ${sameVm.name}`
      : `instance ${sameVm.name} forwards the same VM and likely holds this port: tether down ${sameVm.name} (else see \`lsof -nP -i :${port}\`)`;
  // Another VM's instance (lsof would only show a tether agent, not which one): this one takes the port once it goes.
  if (peer?.state === 'suspended')
    return `instance ${peer.instance} keeps the port for its guest's ${peer.id} while that guest is unreachable (a VM stopped without \`tether down\`?): tether down ${peer.instance} frees it; or ${elsewhere}`;
  if (peer)
    return `instance ${peer.instance} forwards its guest's ${peer.id} there, and this forward takes the port once that goes (tether forward rm ${peer.instance} ${peer.id}, or tether down ${peer.instance}); or ${elsewhere}`;
  return `free host port ${port} (see \`lsof -nP -i :${port}\`) or ${elsewhere}`;
}

interface AgentCheck {
  result: CheckResult;
  link?: CheckResult;
  forwards: ForwardView[] | null;
  mounts?: MountView[];
  guestSocket?: string;
  /** The running agent's link is down because the guest said it shuts down. */
  guestStopping?: boolean;
  /** The running agent is installing or starting the guest agent right now. */
  provisioning?: boolean;
  /** Why the running agent's last try to install or start the guest agent failed. */
  provisionError?: string | null;
  /** When a start of the guest agent that the running agent holds back comes (Date.now() scale); null if none is. */
  restartAt?: number | null;
  /** Guest listeners the running agent leaves out (maxForwards). */
  capped?: number;
  /** Why the running agent is not this command's build of tether (otherBuild), null when it is or is unknown. */
  staleBuild?: string | null;
  /** The guest agent, while the running agent's link to it is up. */
  guest?: GuestView | null;
}

/** How long doctor waits for a provisioning run under way to end, so the guest checks see what it left. */
const PROVISIONING_WAIT_MS = 15_000;

/**
 * The running agent as checkAgent sees it, once a provisioning run under way has ended and a guest agent it is about
 * to start again has had its start (or PROVISIONING_WAIT_MS passed): looked at mid-run, the guest shows a
 * half-installed agent, a run that fails and is retried would hide its failure behind "setting up now" every time,
 * and an agent that crashed right after a start would be reported missing though it is seconds from coming back.
 */
async function settledAgent(paths: InstancePaths, provision: GuestAgentConfig['provision']): Promise<AgentCheck> {
  const deadline = Date.now() + PROVISIONING_WAIT_MS;
  let agent = await checkAgent(paths, provision);
  // One start is waited for: after it, an agent still missing (it crashes at every start) is what to report.
  let started = false;
  let wasProvisioning = agent.provisioning === true;
  while ((agent.provisioning || (agent.restartAt && !started)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    agent = await checkAgent(paths, provision);
    started ||= wasProvisioning && !agent.provisioning;
    wasProvisioning = agent.provisioning === true;
  }
  return agent;
}

async function checkAgent(paths: InstancePaths, provision: GuestAgentConfig['provision']): Promise<AgentCheck> {
  const name = 'host agent';
  const pid = readPid(paths);
  let status: StatusView;
  try {
    status = await clientFor(paths, 5_000).status();
  } catch (err) {
    if (err instanceof AgentNotRunningError) {
      const stale = pid && isAlive(pid) ? ` (pid ${pid} from ha.pid is alive but does not answer)` : '';
      return {
        result: fail(
          name,
          `not running${stale}; the checks below use a fresh SSH connection`,
          `tether up ${paths.name}`,
        ),
        forwards: null,
      };
    }
    if (err instanceof AgentAccessError)
      return {
        result: fail(name, err.message, `as ${err.denied.owner}: tether doctor ${paths.name}`),
        forwards: null,
      };
    return {
      result: fail(
        name,
        `pid ${pid ?? '?'} does not answer on ${paths.socket}: ${(err as Error).message}`,
        `tether down ${paths.name} && tether up ${paths.name}`,
      ),
      forwards: null,
    };
  }
  const forwards = await clientFor(paths, 5_000).forwards();
  const mounts = await clientFor(paths, 5_000).mounts();
  const guestStopping = status.link?.up === false && (status.link.guestStopping ?? null) !== null;
  const detail = `running (pid ${status.pid}), state ${status.state}, ssh ${status.ssh.state}`;
  // Degraded with SSH up and the link down: the guest agent is what is missing (stopped, or restarting).
  // Only for an agent that serves: a failed or starting one is the problem itself, and says why below.
  const serving = status.state === 'ready' || status.state === 'degraded';
  if (serving && status.ssh.state === 'connected' && status.link?.up === false)
    return {
      result: ok(name, detail),
      link: linkDown(paths, status, provision),
      forwards,
      mounts,
      guestSocket: status.link.socket,
      guestStopping,
      provisioning: status.link.provisioning === true,
      provisionError: status.link.provisionError,
      restartAt: status.link.restartAt ? Date.parse(status.link.restartAt) : null,
      capped: status.forwards.capped,
      staleBuild: otherBuild(status.build),
    };
  const result =
    status.state === 'ready'
      ? ok(name, detail)
      : fail(
          name,
          `${detail}${status.ssh.lastError ? `, last ssh error: ${status.ssh.lastError}` : ''}`,
          `tether status ${paths.name}; tether logs ${paths.name} --level warn`,
        );
  const provisioning = status.link?.provisioning === true;
  const capped = status.forwards.capped;
  const guest = status.link?.up ? status.guest : null;
  return {
    result,
    forwards,
    mounts,
    guestSocket: status.link?.socket,
    guestStopping,
    provisioning,
    provisionError: status.link?.provisionError,
    capped,
    staleBuild: otherBuild(status.build),
    guest,
  };
}

/** The guest agent and its scanner as the running agent sees them over its own SSH connection. */
export function seenByAgent(guest: GuestView): CheckResult[] {
  const via = 'as the running agent sees it over its SSH connection (a new login failed: see above)';
  return [
    ok('guest agent', `tether-guest ${guest.version} pid ${guest.agentPid}, ${via}`),
    guest.scanIntervalMs > 0
      ? ok(
          'port scanner',
          `scanning every ${Math.round(guest.scanIntervalMs)} ms, ${guest.listeners} listeners; ${listenEventsText(guest.listenEvents ?? undefined)}; ${via}`,
        )
      : fail('port scanner', 'not running (scan interval 0)', 'restart the guest agent; see its log in the guest'),
  ];
}

/** The host agent is connected but its link to the guest agent is down. */
function linkDown(paths: InstancePaths, status: StatusView, provision: GuestAgentConfig['provision']): CheckResult {
  const why = linkDownReason(status.link);
  return fail(
    'guest agent link',
    `the host agent is not connected to the guest agent${why ? `: ${why}` : ''}; forwards of detected ports are suspended`,
    status.link?.provisioning
      ? `the host agent is installing or starting the guest agent now: wait for it (tether logs ${paths.name} -f)`
      : status.link?.provisionError
        ? provisionFailedFix(paths.name)
        : status.link?.guestStopping
          ? 'the guest said it is shutting down (a reboot?): tether waits for it and starts its agent when the guest is ' +
            'back (at once when it booted again, else after 5 minutes)'
          : provision === 'never'
            ? 'start tether-guest in the guest (guestAgent.provision is never: tether does not), or set guestAgent.provision: auto'
            : `the host agent starts the guest agent again by itself; if this stays: tether logs ${paths.name} --component link`,
  );
}

/** The running agent's last try to install or start the guest agent failed: its error (shown with it) is the fix. */
function provisionFailedFix(instance: string): string {
  return `fix what the failure names; the host agent tries again by itself (tether logs ${instance} --component provision)`;
}

const DOCTOR_READY_TIMEOUT_MS = 10_000;

function connectConfig(config: LoadedConfig, creds: Credentials, readyTimeout: number): ConnectConfig {
  const { ssh } = config;
  return { host: ssh.host, port: ssh.port, username: ssh.user, readyTimeout, ...creds };
}

/**
 * A fresh SSH connection: reachability, host key against the pin, and key authentication, as separate checks. The
 * client is logged in when every check passed (the caller ends it). Also `tether shell`'s word on a failed ssh.
 */
export async function probeSsh(
  paths: InstancePaths,
  config: LoadedConfig,
  guestStopping: boolean,
  /** How long the server gets for its banner and the login (shorter after a failure the user has waited out). */
  readyTimeoutMs = DOCTOR_READY_TIMEOUT_MS,
): Promise<{ results: CheckResult[]; client: Client | null }> {
  const target = sshTarget(config.ssh);
  const results: CheckResult[] = [];
  // The agent's own choice of keys, so doctor and agent agree on what is offered.
  const creds = credentials(config.ssh);
  if ('error' in creds) {
    const fix = config.ssh.identityFile
      ? `fix ssh.identityFile in ${paths.config}`
      : `set ssh.identityFile in ${paths.config} or run an ssh-agent`;
    results.push(fail(config.ssh.identityFile ? 'identity file' : 'credentials', creds.error, fix));
    return { results, client: null };
  }
  if (config.ssh.identityFile) results.push(ok('identity file', config.ssh.identityFile));
  let pinned: HostKey | null;
  try {
    pinned = readPinned(paths.hostKey);
  } catch (err) {
    results.push(fail('host key', (err as Error).message, `rm ${paths.hostKey} (it is pinned again on the next up)`));
    return { results, client: null };
  }
  let offered: HostKey | null = null;
  const client = new Client();
  // Its own socket, so a server that ends the connection before its banner is named as the agent names it.
  const sock = net.connect(config.ssh.port, config.ssh.host);
  const banner = new BannerWatch(sock, target, readyTimeoutMs);
  const outcome = await new Promise<Error | null>((resolve) => {
    client.once('ready', () => resolve(null));
    // on, not once: ssh2 can emit a second error (e.g. the socket's) after the first.
    client.on('error', (err) => resolve(err));
    client.connect({
      ...connectConfig(config, creds, readyTimeoutMs),
      sock,
      hostVerifier: (key: Buffer) => {
        offered = describeKey(key);
        return pinned === null || pinned.base64 === offered.base64;
      },
    });
  });
  const key = offered as HostKey | null;
  if (!key) {
    results.push(
      fail(
        'ssh reachable',
        (outcome && banner.explain(outcome)) ?? `${target}: ${outcome?.message ?? 'no SSH handshake'}`,
        // The running agent heard the guest say it shuts down: a reboot under way, not a setting to fix.
        guestStopping
          ? 'the guest said it is shutting down (a reboot?): wait for it; tether reconnects by itself when it is back'
          : `start the VM / its sshd, or fix ssh.host and ssh.port in ${paths.config}`,
      ),
    );
    client.end();
    return { results, client: null };
  }
  results.push(ok('ssh reachable', `${target} answered`));
  if (pinned && pinned.base64 !== key.base64) {
    results.push(
      fail(
        'host key',
        `changed: pinned ${pinned.algorithm} ${pinned.fingerprint}, server offers ${key.algorithm} ${key.fingerprint}`,
        `if the VM was re-created on purpose: rm ${paths.hostKey}; otherwise find out who answers at ${target}`,
      ),
    );
    client.end();
    return { results, client: null };
  }
  results.push(
    ok(
      'host key',
      pinned
        ? `${key.algorithm} ${key.fingerprint} matches the pin`
        : `${key.fingerprint} (not pinned yet; \`up\` pins it)`,
    ),
  );
  if (outcome) {
    results.push(
      fail('ssh auth', `${target}: ${outcome.message}`, authorizedKeyFix(config.ssh.user, config.ssh.identityFile)),
    );
    client.end();
    return { results, client: null };
  }
  results.push(ok('ssh auth', `logged in as ${config.ssh.user}`));
  return { results, client };
}

function openSocketOn(client: Client): (path: string) => Promise<ClientChannel> {
  return (path) =>
    new Promise<ClientChannel>((resolve, reject) =>
      client.openssh_forwardOutStreamLocal(path, (err, ch) => (err ? reject(err) : resolve(ch))),
    );
}

function shellOn(client: Client) {
  return {
    execText: (command: string, timeoutMs?: number) => execOn(client, command, timeoutMs),
    openStreamLocal: openSocketOn(client),
  };
}

/**
 * Why the SSH user's login runs none of tether's commands (see unrunScript: csh, rbash, an rc file that exits,
 * ForceCommand), or null when a two-line script runs. Exported for its test.
 */
export async function loginProblem(client: Client): Promise<string | null> {
  const r = await execOn(client, loginShellCommand('true\necho tether-ran'), 10_000).catch(() => null);
  if (!r || r.stdout.includes('tether-ran')) return null;
  return unrunScript(r);
}

async function checkGuestAgent(
  instance: string,
  client: Client,
  config: LoadedConfig,
  socket: string,
  running: {
    /** Why the running agent's last try to start it failed: the fix when it does not answer. */
    provisionError: string | null;
    /** A host agent runs (and, with provisioning on, starts the guest agent again by itself). */
    hostAgentRuns: boolean;
  },
): Promise<CheckResult[]> {
  const { provisionError } = running;
  // Without systemd (or sudo) tether runs the agent in the background itself: there is no unit to restart then.
  const unit = 'where tether installed its systemd unit, in the guest: sudo systemctl restart tether-guest';
  const fix = provisionError
    ? provisionFailedFix(instance)
    : config.guestAgent.provision !== 'auto'
      ? `start tether-guest in the guest (\`tether-guest run\`; ${unit}), or set guestAgent.provision: auto`
      : running.hostAgentRuns
        ? `the running host agent starts it again by itself (tether logs ${instance} --component link -f); if it stays away: ${unit}`
        : `tether up ${instance} (provisioning starts it again), or ${unit}`;
  const startFailed = provisionError ? `; the host agent's last try to start it failed: ${provisionError}` : '';
  let peer: Peer | null = null;
  let stream: ClientChannel;
  try {
    stream = await openSocketOn(client)(socket);
  } catch (err) {
    // The same look as provisioning's: a running agent behind an sshd that refuses the channel is no dead agent.
    const refused = await streamLocalRefusal(shellOn(client), socket, err as Error).catch(() => null);
    // A login that runs none of tether's commands also kept provisioning from starting the agent: that is the fix.
    const login = refused ? null : await loginProblem(client);
    return [
      refused
        ? fail('guest agent', refused.message, sshdForwardingFix('unix'))
        : fail(
            'guest agent',
            `no answer on ${socket} in the guest: ${(err as Error).message}${startFailed}`,
            login ?? fix,
          ),
      skip('port scanner', 'needs the guest agent'),
    ];
  }
  const replaceFix =
    config.guestAgent.provision === 'auto'
      ? `tether down ${instance} && tether up ${instance} (provisioning replaces it)`
      : "install this host's tether-guest in the guest (tether-guest install), or set guestAgent.provision: auto";
  let closeError: Error | undefined;
  try {
    peer = new Peer(stream, { agent: `${HOST_AGENT_NAME} doctor`, timeoutMs: 5_000 });
    peer.once('close', (_reason: string, err?: Error) => {
      closeError = err;
    });
    const { info, build } = await greet(peer, socket, 5_000);
    const answers = `tether-guest ${info.version} pid ${info.pid} answers on ${socket}`;
    const outdated = outdatedAgent(info, build, defaultBundleDir());
    const results = [
      outdated ? warn('guest agent', `${answers}, but ${outdated}`, replaceFix) : ok('guest agent', answers),
    ];
    const age = Math.max(0, Math.round((Date.now() - info.startedAt) / 1000));
    results.push(
      info.scanIntervalMs > 0
        ? ok(
            'port scanner',
            `scanning every ${Math.round(info.scanIntervalMs)} ms (last scan ${info.lastScanMs.toFixed(2)} ms), ${info.listeners} listeners, up ${age}s; ${listenEventsText(info.listenEvents)}${processNamesText(info.uid)}`,
          )
        : fail('port scanner', 'not running (scan interval 0)', 'restart the guest agent; see its log in the guest'),
    );
    return results;
  } catch (err) {
    // It answered, in a protocol this host's tether does not speak (another tether's guest agent).
    if (closeError instanceof ProtocolVersionError)
      return [
        fail('guest agent', `the guest agent on ${socket} cannot be used: ${closeError.message}`, replaceFix),
        skip('port scanner', 'needs a guest agent of this host'),
      ];
    return [
      fail('guest agent', `no answer on ${socket} in the guest: ${(err as Error).message}`, fix),
      skip('port scanner', 'needs the guest agent'),
    ];
  } finally {
    peer?.close('doctor done');
  }
}

/**
 * Whose processes the scanner can name: an agent without root reads only its own user's /proc/PID/fd, so the
 * listeners of other users (root's sshd, docker) show `-` under PROCESS.
 */
function processNamesText(uid: number): string {
  return uid === 0
    ? ''
    : `; it runs as uid ${uid}, not root, so it names only that user's processes (others show - under PROCESS in forward ls)`;
}

/** Whether new TCP listeners wake the guest's scanner at once, or are found by its ticks only (and why). */
function listenEventsText(state: Info['listenEvents']): string {
  if (!state) return 'kernel listen events: not reported by this agent';
  return state.on ? `kernel listen events on (${state.detail})` : `no kernel listen events (${state.detail})`;
}
