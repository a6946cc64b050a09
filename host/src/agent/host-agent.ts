// The host agent of one VM: wires the SSH session, the guest-agent link, the forwarding engine and (when configured)
// the mounts together, runs the boot requirements in order, and exposes the operator view (AgentApi) that the control
// API serves. Owns lifecycles and the translation of component events into AgentEvents; no socket code lives here.
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Info } from '@tether/protocol';
import { isLoopbackHost } from '../address.js';
import type { Config } from '../config/schema.js';
import { firstOutcome } from '../first-outcome.js';
import { ForwardEngine, GUEST_LISTENER_FACTOR } from '../forward/engine.js';
import { ListenerUpdates } from '../forward/listener-updates.js';
import { instanceFiles } from '../instance.js';
import { AgentLink, type AgentLinkOptions } from '../link/index.js';
import { componentLogger, type Logger } from '../log.js';
import type { Component } from '../log-names.js';
import {
  type AgentApi,
  type AgentEvent,
  type ConnectionState,
  countStates,
  FORWARD_STATES,
  type ForwardSpec,
  type ForwardView,
  type GuestView,
  MOUNT_STATES,
  type MountView,
  REQUIREMENT,
  type StatusView,
} from '../model.js';
import { defaultBundleDir, outdatedAgent, runningAgentSocket } from '../provision/index.js';
import {
  authorizedKeyFix,
  guestServerPort,
  SshSession,
  type SshSessionOptions,
  StreamLocalRefusedError,
  streamLocalRefusal,
} from '../ssh/index.js';
import { HOST_AGENT_NAME, hostBuild } from '../version.js';
import { defaultMountSkipped, mountSummary, mountsDegradedReason } from './mounts.js';
import { PeerForwards } from './peer-forwards.js';
import { ProblemRing } from './problems.js';
import { Provisioner } from './provisioner.js';
import { BootRequirements } from './requirements.js';

/** The seam for mounts: requirement 5 calls start(); the agent reports views() and calls stop() last. */
export interface AgentMounts {
  /** Checks the guest's mount requirements and mounts; resolves with a detail line, rejects with what failed. */
  start(ssh: SshSession, link: AgentLink): Promise<string | null>;
  /** After a failed start: the same, now (the driver also retries by itself, with backoff). */
  retry(): Promise<string | null>;
  views(): MountView[];
  stop(): Promise<void>;
  /** Called with each changed view, so the agent can announce it. */
  onChange?: (listener: (view: MountView) => void) => void;
}

export interface HostAgentOptions {
  instanceDir: string;
  /** Root logger; components get children. */
  logger: Logger;
  /** Where build/guest (tether-guest.cjs, manifest.json) is; default: the repository's build/guest. */
  guestBundleDir?: string;
  mounts?: AgentMounts;
  /**
   * The mounts are the implicit default (`~`, no `mounts:` in tether.yaml): when the guest cannot take them,
   * requirement 5 is skipped with the reason and the agent is ready without them (they keep being tried).
   */
  mountsOptional?: boolean;
  /** Where warnings and errors are kept for status; share it with loggers made outside the agent (mounts). */
  problems?: ProblemRing;
  /** Shown in status; default <instanceDir>/logs/current.log. */
  logFile?: string;
  /** Deadline of each boot requirement. */
  requirementTimeoutMs?: number;
  /** How long requirement 2 keeps trying while the guest refuses the login (default 60 s). */
  loginRefusedGraceMs?: number;
  /** Reconnect tuning (tests). */
  ssh?: Partial<Pick<SshSessionOptions, 'backoffInitialMs' | 'backoffMaxMs' | 'readyTimeoutMs' | 'onTraffic'>>;
  /** Agent link timing (tests). */
  link?: Partial<
    Pick<
      AgentLinkOptions,
      | 'setupTimeoutMs'
      | 'livenessIntervalMs'
      | 'livenessTimeoutMs'
      | 'brokenRetryMaxMs'
      | 'ensureIntervalMs'
      | 'servedBeforePromptRestartMs'
    >
  >;
}

/** How long the guest's listeners may wait for its sshd port to be learned on a new connection. */
const SSH_PORT_WAIT_MS = 5_000;

/** How long requirement 2 keeps trying while the guest refuses the login (see waitLogin). */
const LOGIN_REFUSED_GRACE_MS = 60_000;

/**
 * How long requirement 4 waits for the guest's first listeners to be forwarded once the link is up: their host
 * ports bind in milliseconds; the bound only keeps a stuck bind from holding the boot.
 */
const FIRST_SNAPSHOT_WAIT_MS = 10_000;

/** Emits `event` (AgentEvent). */
export class HostAgent extends EventEmitter implements AgentApi {
  readonly ssh: SshSession;
  readonly link: AgentLink;
  readonly engine: ForwardEngine;
  /** The last warnings and errors of every component, for status. */
  readonly problems: ProblemRing;
  readonly startedAt = new Date();
  private state: StatusView['state'] = 'starting';
  private readonly requirements: BootRequirements;
  private readonly log: Logger;
  private readonly bundleDir: string;
  private readonly provisioner: Provisioner;
  private stopping = false;
  private stopReason = '';
  /** Requirement 5 failed and not every mount is mounted since: the agent stays degraded. */
  private mountsFailed = false;
  /** Settles once this connection's guest sshd port is known or waited for long enough (learnSshPort). */
  private sshPortKnown: Promise<void> = Promise.resolve();
  /** Times the agent link went down: listener updates held back across a drop are dropped. */
  private linkDowns = 0;
  /** Settles once the guest's first snapshot of listeners has been applied (each forward bound or saying why not). */
  private readonly firstSnapshot: Promise<void>;
  private firstSnapshotApplied: () => void = () => {};
  private retryingMounts = false;

  constructor(
    readonly name: string,
    readonly config: Config,
    private readonly opts: HostAgentOptions,
  ) {
    super();
    this.firstSnapshot = new Promise((resolve) => {
      this.firstSnapshotApplied = resolve;
    });
    this.problems = opts.problems ?? new ProblemRing(20);
    this.log = this.logger('agent');
    this.bundleDir = opts.guestBundleDir ?? defaultBundleDir();
    // Requirement 5 (mounts ready) exists when mounts are configured, the default mount of ~ included.
    const total = opts.mounts ? 5 : 4;
    this.requirements = new BootRequirements(total, this.log, (requirement) =>
      this.announce({ type: 'requirement', requirement }),
    );
    this.ssh = new SshSession({
      ssh: config.ssh,
      instanceDir: opts.instanceDir,
      logger: this.logger('ssh'),
      ...opts.ssh,
    });
    const provision = config.guestAgent.provision === 'auto';
    this.provisioner = new Provisioner(this.ssh, config, this.bundleDir, this.logger('provision'), (socket) =>
      this.link.useSocket(socket),
    );
    this.link = new AgentLink(this.ssh, {
      socket: config.guestAgent.socket,
      logger: this.logger('link'),
      agent: HOST_AGENT_NAME,
      ensureAgent: provision ? (_reason, replace) => this.provisioner.run(replace).then(() => undefined) : undefined,
      outdated: (info, build) => {
        const reason = outdatedAgent(info, build, this.bundleDir);
        return reason && !provision
          ? `${reason}, and guestAgent.provision is never: install this host's tether-guest in the guest, or set provision: auto`
          : reason;
      },
      // sshd refusing unix-socket forwarding looks like a dead agent; provisioning would restart a working one.
      explainOpenFailure: async (err) => (await streamLocalRefusal(this.ssh, this.link.socket, err))?.message ?? null,
      ...opts.link,
    });
    const peers = new PeerForwards(opts.instanceDir);
    this.engine = new ForwardEngine({
      ssh: this.ssh,
      portForwards: config.portForwards,
      maxForwards: config.maxForwards,
      hostSshPort: isLoopbackHost(config.ssh.host) ? config.ssh.port : undefined,
      instanceDir: opts.instanceDir,
      logger: this.logger('forward'),
      requestScan: () => this.link.requestScan(),
      watchSockets: (paths) => this.link.watchSockets(paths),
      peerHolder: (key) => peers.holderOf(key),
    });
    this.wire();
  }

  // ── AgentApi ──────────────────────────────────────────────────────────────────────────────────────────────────

  status(): StatusView {
    const forwards = { ...countStates(FORWARD_STATES, this.engine.views()), capped: this.engine.capped };
    const mountStates = this.mounts();
    const mounts = countStates(MOUNT_STATES, mountStates);
    const restartAt = this.link.nextStartAt;
    return {
      name: this.name,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      build: hostBuild(),
      state: this.state,
      ssh: {
        target: this.ssh.target,
        state: this.ssh.state,
        since: this.ssh.since.toISOString(),
        lastError: this.ssh.lastError,
        reconnects: this.ssh.reconnects,
      },
      guest: this.link.info ? guestView(this.link.info, this.link.build) : null,
      link: {
        up: this.link.up,
        lastError: this.link.lastError,
        outdated: this.link.outdated,
        socket: this.link.socket,
        guestStopping: this.link.guestStopping,
        provisioning: this.provisioner.busy,
        provisionStep: this.provisioner.step,
        provisionError: this.provisioner.lastFailure,
        restartAt: restartAt === null ? null : new Date(restartAt).toISOString(),
      },
      requirements: this.requirements.views(),
      forwards,
      mounts,
      mountStates,
      // Why it is stopping, from the moment it was asked to (state `stopping`).
      stopReason: this.stopping ? this.stopReason : null,
      lastErrors: this.problems.list(),
      logFile: this.opts.logFile ?? instanceFiles(this.opts.instanceDir).currentLog,
    };
  }

  refreshStatus(): Promise<void> {
    return this.link.refreshInfo();
  }

  forwards(): ForwardView[] {
    return this.engine.views();
  }

  mounts(): MountView[] {
    return this.opts.mounts?.views() ?? [];
  }

  addForward(spec: ForwardSpec): Promise<ForwardView> {
    return this.engine.add(spec);
  }

  removeForward(id: string): Promise<void> {
    return this.engine.remove(id);
  }

  retryMounts(): boolean {
    const mounts = this.opts.mounts;
    // Without SSH there is nothing to try now: the mounts come back with the connection by themselves.
    if (!mounts || !this.mountsFailed || this.retryingMounts || this.stopping || !this.ssh.connected) return false;
    this.retryingMounts = true;
    void this.requirement(REQUIREMENT.mountsReady, () => mounts.retry(), this.opts.mountsOptional)
      .then(
        () => this.mountsChanged(),
        () => {
          // Logged and shown by the requirement; the driver keeps trying. Mounted meanwhile by its own retry: met.
          if (!this.mountsFailed) this.mountsMet();
        },
      )
      .finally(() => {
        this.retryingMounts = false;
      });
    return true;
  }

  // ── lifecycle ─────────────────────────────────────────────────────────────────────────────────────────────────

  /** Runs the boot requirements in order; rejects with the first that failed (the agent keeps its state for status). */
  async start(): Promise<void> {
    const timeout = this.opts.requirementTimeoutMs ?? 120_000;
    this.ssh.start();
    try {
      await this.requirement(REQUIREMENT.sshReachable, (note) =>
        this.showingRetries(note, () => this.waitReachable(timeout)),
      );
      await this.requirement(REQUIREMENT.hostKey, async (note) => {
        await this.showingRetries(note, () => this.waitLogin(timeout));
        const key = this.ssh.hostKey!;
        const how = this.ssh.hostKeyResult === 'pinned' ? 'pinned on first use' : 'matches the pinned key';
        return `${key.algorithm} ${key.fingerprint} (${how}); logged in as ${this.config.ssh.user}`;
      });
      await this.engine.start();
      if (this.config.guestAgent.provision === 'never') {
        const { socket, installDir } = this.config.guestAgent;
        this.link.useSocket(await runningAgentSocket(this.ssh, socket, installDir));
      }
      this.link.start();
      if (this.config.guestAgent.provision === 'never') {
        this.requirements.show(
          REQUIREMENT.provisioned,
          'skipped',
          'guestAgent.provision is never: the guest agent must already run',
          0,
        );
      } else {
        await this.requirement(REQUIREMENT.provisioned, (note) => this.waitProvisioned(timeout, note));
      }
      // Nothing will start the agent, or replace one of another protocol version: what is missing, and the fix, go
      // with every line about the wait.
      const fix = () =>
        this.config.guestAgent.provision !== 'never'
          ? ''
          : this.link.incompatible
            ? "; guestAgent.provision is never: install this host's tether-guest in the guest, or set guestAgent.provision: auto"
            : '; guestAgent.provision is never: start tether-guest in the guest (`tether-guest run`), or set guestAgent.provision: auto';
      await this.requirement(REQUIREMENT.agentRunning, (note) =>
        this.showingLinkError(
          (detail) => note(`${detail}${fix()}`),
          async () => {
            const info = await this.link.waitUp(timeout).catch((err: Error) => {
              throw new Error(`${err.message}${fix()}`);
            });
            // Ready means what listens in the guest now is forwarded (or says why not): `up` then a connect works.
            await Promise.race([this.firstSnapshot, sleep(FIRST_SNAPSHOT_WAIT_MS, undefined, { ref: false })]);
            // No pid: this line stays as the boot's record, while the agent may be restarted since (status: guest).
            // No listener count either: a just-started agent answers before its first scan, and would say 0.
            return `tether-guest ${info.version} on ${info.hostname}`;
          },
        ),
      );
      const mounts = this.opts.mounts;
      if (mounts) {
        // A mount the guest cannot take yet leaves the forwards serving, as Lima leaves a degraded instance running:
        // the agent goes on degraded, the mounts keep trying, and `up` reports requirement 5 as failed.
        this.mountsFailed = await this.requirement(
          REQUIREMENT.mountsReady,
          () => mounts.start(this.ssh, this.link),
          this.opts.mountsOptional,
        ).then(
          () => false,
          () => true,
        );
      }
      this.setState(this.healthy() ? 'ready' : 'degraded');
    } catch (err) {
      this.setState('failed');
      throw err;
    }
  }

  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.stopReason = reason;
    this.setState('stopping', reason);
    await this.opts.mounts?.stop().catch((err: Error) => this.log.warn(`stopping mounts failed: ${err.message}`));
    this.link.stop();
    await this.engine.stop(`host agent stopping: ${reason}`);
    await this.ssh.close(reason);
  }

  // ── internals ─────────────────────────────────────────────────────────────────────────────────────────────────

  /** A component's logger whose warnings and errors also land in `problems`. */
  logger(component: Component): Logger {
    return this.problems.tap(componentLogger(this.opts.logger, component), component);
  }

  private wire(): void {
    this.ssh.on('state', (state: ConnectionState, reason: string | null) => {
      // Closed for good (a changed host key, a refused login): what the user must fix is the reason from now on.
      if (state === 'closed' && reason) this.engine.setSshDown(`closed: ${reason}`);
      this.announce({ type: 'connection', state, reason });
    });
    this.ssh.on('disconnected', (reason: string) => this.engine.setSshDown(reason));
    this.ssh.on('connected', () => {
      this.engine.setSshDown(null);
      this.sshPortKnown = this.learnSshPort();
    });
    this.engine.on('change', (forward: ForwardView) => this.announce({ type: 'forward', forward }));
    this.engine.on('removed', (id: string) => this.announce({ type: 'forward-removed', id }));
    this.opts.mounts?.onChange?.((mount) => {
      this.announce({ type: 'mount', mount });
      this.mountsChanged();
    });
    this.link.on('peer', (peer) => this.engine.attachPeer(peer));
    // The guest's listeners wait for its sshd port to be known, so that port is never bound, even for a moment; what
    // was held back while the link went down (and maybe up again) is stale and dropped.
    const afterSshPort = (apply: () => Promise<void>) => {
      const generation = this.linkDowns;
      return this.sshPortKnown.then(() => (generation === this.linkDowns ? apply() : undefined));
    };
    const updates = new ListenerUpdates(
      {
        // Requirement 4 waits for a snapshot applied, not one dropped as stale (the link went down meanwhile).
        snapshot: (listeners) =>
          afterSshPort(() => this.engine.setListeners(listeners).finally(() => this.firstSnapshotApplied())),
        delta: (delta) => afterSshPort(() => this.engine.applyDelta(delta)),
      },
      this.config.maxForwards * GUEST_LISTENER_FACTOR,
      // A failure while reconciling must not take every other forward down with an unhandled rejection.
      (err) => this.log.error({ err }, `applying the guest's listeners failed: ${err.message}`),
    );
    this.link.on('snapshot', (listeners) => updates.pushSnapshot(listeners));
    this.link.on('delta', (delta) => updates.pushDelta(delta));
    this.link.on('socket-changed', (path: string) => this.engine.socketChanged(path));
    this.link.on('socket-watch', (on: boolean) => this.engine.setSocketWatch(on));
    this.link.on('up', () => {
      if (this.state === 'degraded' && this.healthy()) this.setState('ready');
    });
    this.link.on('guest-stopping', () => this.ssh.guestGoingAway());
    this.link.on('down', (reason: string) => {
      this.linkDowns++;
      updates.clear();
      this.engine.suspendDetected(reason);
      if (this.state === 'ready') this.setState('degraded', `link to the guest agent down: ${reason}`);
    });
    // While the link is down, the reason it cannot come back (sshd now refuses the channel) replaces the reason it
    // went down: that is what `forward ls` should name, with the sshd option to change.
    this.link.on('blocked', (message: string) => {
      if (!this.link.up) this.engine.suspendDetected(message);
    });
  }

  /**
   * Each connection: the port the guest's sshd serves it on is never forwarded (22 until known). The returned gate
   * opens once the port is known, or after SSH_PORT_WAIT_MS whatever the guest does (the listeners wait on it); a
   * later answer is still applied.
   */
  private learnSshPort(): Promise<void> {
    const learned = guestServerPort(this.ssh)
      .then((port) =>
        port === null
          ? this.log.debug('the guest shell has no $SSH_CONNECTION; taking its sshd port to be 22')
          : this.engine.setSshPort(port),
      )
      .catch((err: Error) => this.log.debug({ err: err.message }, 'could not ask the guest for its sshd port'));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.log.debug(`the guest's sshd port is not known after ${SSH_PORT_WAIT_MS} ms; applying its listeners`);
        resolve();
      }, SSH_PORT_WAIT_MS);
      timer.unref();
      void learned.finally(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private announce(e: AgentEvent): void {
    this.emit('event', e);
  }

  private setState(state: StatusView['state'], reason?: string): void {
    if (state === this.state || (this.stopping && state !== 'stopping')) return;
    const from = this.state;
    this.state = state;
    const fields = { state, from, reason };
    const msg = `host agent ${state} (was ${from})${reason ? `: ${reason}` : ''}`;
    if (state === 'failed' || state === 'degraded') this.log.warn(fields, msg);
    else this.log.info(fields, msg);
    this.announce({ type: 'status', state });
  }

  /** Requirement 5 is met after it failed: shown, and logged (the line settles its failure in `status`). */
  private mountsMet(): void {
    const n = this.opts.mounts?.views().length ?? 0;
    this.requirements.ok(REQUIREMENT.mountsReady, `${n} of ${n} mounted (after the failure above)`);
  }

  /**
   * Nothing keeps the agent degraded: the guest agent link is up, and the mounts (unless optional) serve: none has
   * a failed requirement pending, and once booted every one is mounted, so `ready` after a reconnect means the
   * remounts are done too, not only the forwards.
   */
  private healthy(): boolean {
    if (!this.link.up) return false;
    if (this.opts.mountsOptional === true) return true;
    if (this.mountsFailed) return false;
    const booted = this.requirements.stateOf(REQUIREMENT.mountsReady) === 'ok';
    return !booted || this.mounts().every((v) => v.state === 'mounted');
  }

  /**
   * A mount of a booted agent failing (its remount after a reconnect, say) fails requirement 5 again: the agent is
   * degraded and `up` retries, as at boot. After a failed requirement 5, every mount mounted at last: the requirement
   * is met and the agent healthy again.
   */
  private mountsChanged(): void {
    const views = this.opts.mounts?.views() ?? [];
    const r5 = this.requirements.stateOf(REQUIREMENT.mountsReady);
    const failing = views.some((v) => v.state === 'error');
    if (failing && r5 === 'ok' && !this.retryingMounts && !this.opts.mountsOptional) {
      this.mountsFailed = true;
      this.requirements.failed(REQUIREMENT.mountsReady, mountSummary(views));
      if (this.state === 'ready') this.setState('degraded');
      return;
    }
    if (this.mountsFailed && views.every((v) => v.state === 'mounted')) {
      this.mountsFailed = false;
      // While a retry runs, its own requirement() reports the outcome.
      if ((r5 === 'failed' || r5 === 'skipped') && !this.retryingMounts) this.mountsMet();
    }
    // A remount under way (after a reconnect, or sshfs restarted) is degraded until it is mounted again.
    if (this.state === 'degraded' && this.healthy()) this.setState('ready');
    else if (this.state === 'ready' && !this.healthy()) this.setState('degraded', mountsDegradedReason(views));
  }

  /** Runs one boot requirement (see BootRequirements.run); `optional`: a failure skips it (the default mount of ~). */
  private requirement(
    index: number,
    check: (note: (detail: string) => void) => Promise<string | null>,
    optional = false,
  ): Promise<void> {
    return this.requirements.run(index, check, {
      // Stopped while it waited (`tether down` during `up`): that, not the SSH error it caused, is why.
      reason: (err) => (this.stopping ? `the agent was stopped: ${this.stopReason}` : err.message),
      skipped: optional ? (reason) => defaultMountSkipped(reason, this.mounts()) : undefined,
    });
  }

  /** Runs `wait`, showing why each SSH attempt failed on the waiting requirement instead of a silent wait. */
  private async showingRetries<T>(note: (detail: string) => void, wait: () => Promise<T>): Promise<T> {
    const onRetrying = (reason: string) => note(`${reason}; ${this.retryingWhat()}`);
    this.ssh.on('retrying', onRetrying);
    try {
      return await wait();
    } finally {
      this.ssh.off('retrying', onRetrying);
    }
  }

  /**
   * What a retry is waiting for. A refused login is tried for a while, as a new VM may be installing the key (cloud-
   * init); the fix is said at once all the same, for the wrong key that will never be accepted.
   */
  private retryingWhat(): string {
    if (this.ssh.loginRefusedSince === null) return 'retrying';
    const grace = Math.round((this.opts.loginRefusedGraceMs ?? LOGIN_REFUSED_GRACE_MS) / 1000);
    const { user, identityFile } = this.config.ssh;
    return `retrying for up to ${grace} s in case the VM is still installing the key; if not: ${authorizedKeyFix(user, identityFile)}`;
  }

  /**
   * Login, retried while the guest refuses it for up to loginRefusedGraceMs: a guest whose sshd is up before its
   * key is installed (a late provisioning script) gets that long; a wrong key fails the requirement then, not at
   * the end of `up`'s timeout.
   */
  private waitLogin(timeoutMs: number): Promise<void> {
    return firstOutcome<void>(({ done, fail }) => {
      const onRetrying = (reason: string) => {
        const since = this.ssh.loginRefusedSince;
        if (since !== null && performance.now() - since >= (this.opts.loginRefusedGraceMs ?? LOGIN_REFUSED_GRACE_MS)) {
          const { user, identityFile } = this.config.ssh;
          fail(
            new Error(
              `${reason}; refused for ${Math.round((performance.now() - since) / 1000)} s: ` +
                `${authorizedKeyFix(user, identityFile)}, or set ssh.identityFile in tether.yaml to a key the guest accepts`,
            ),
          );
        }
      };
      this.ssh.on('retrying', onRetrying);
      this.ssh.waitConnected(timeoutMs).then(() => done(), fail);
      return () => this.ssh.off('retrying', onRetrying);
    });
  }

  /** Runs `wait`, showing the link's last error on the waiting requirement (and so in `up`'s timeout message). */
  private async showingLinkError(note: (detail: string) => void, wait: () => Promise<string>): Promise<string> {
    const since = Date.now(); // failures from before (the socket before provisioning) are not this wait's
    const show = () => {
      if (this.link.lastError && this.link.lastErrorAt >= since) note(this.link.lastError);
    };
    const timer = setInterval(show, 2000); // a link that comes up at once shows nothing
    try {
      return await wait();
    } finally {
      clearInterval(timer);
    }
  }

  /** The first SSH handshake; fails at once when the session gave up for good (credentials, configuration). */
  private waitReachable(timeoutMs: number): Promise<string> {
    const done = () => `${this.ssh.target} answered with an SSH handshake`;
    if (this.ssh.hostKey) return Promise.resolve(done());
    const closed = () => new Error(`ssh ${this.ssh.target}: ${this.ssh.lastError ?? 'session closed'}`);
    if (this.ssh.state === 'closed') return Promise.reject(closed());
    const deadline = {
      ms: timeoutMs,
      error: () =>
        new Error(
          `no SSH server answered at ${this.ssh.target} within ${timeoutMs} ms: ${this.ssh.lastError ?? 'no error yet'}`,
        ),
    };
    return firstOutcome<string>((outcome) => {
      const onReachable = () => outcome.done(done());
      const onState = (state: string) => {
        if (state === 'closed') outcome.fail(closed());
      };
      this.ssh.on('reachable', onReachable);
      this.ssh.on('state', onState);
      return () => {
        this.ssh.off('reachable', onReachable);
        this.ssh.off('state', onState);
      };
    }, deadline);
  }

  /**
   * Requirement 3: the agent answers by itself, or provisioning (started by the link on no answer) succeeds. Fails at
   * once when the link is blocked (sshd refuses the channel to a running agent): provisioning cannot help then.
   */
  private waitProvisioned(timeoutMs: number, note: (detail: string) => void): Promise<string> {
    if (this.link.up) return Promise.resolve(`already running at ${this.link.socket}`);
    if (this.link.blocked) return Promise.reject(new Error(this.link.blocked));
    const deadline = {
      ms: timeoutMs,
      error: () =>
        new Error(`guest agent not provisioned within ${timeoutMs} ms: ${this.link.lastError ?? 'no answer yet'}`),
    };
    return firstOutcome<string>(({ done, fail }) => {
      const onUp = () => done(this.provisioner.summary ?? `already running at ${this.link.socket}`);
      // A provisioning failure is final for this requirement; the link keeps retrying for later.
      const onFailed = (err: Error) =>
        fail(err instanceof StreamLocalRefusedError ? err : new Error(`cannot start the guest agent: ${err.message}`));
      const onBlocked = (reason: string) => fail(new Error(reason));
      this.link.once('up', onUp);
      this.link.once('blocked', onBlocked);
      this.provisioner.once('failed', onFailed);
      this.provisioner.on('step', note);
      return () => {
        this.provisioner.off('failed', onFailed);
        this.provisioner.off('step', note);
        this.link.off('up', onUp);
        this.link.off('blocked', onBlocked);
      };
    }, deadline);
  }
}

function guestView(info: Info, build: string | null): GuestView {
  return {
    version: info.version,
    build,
    hostname: info.hostname,
    kernel: info.kernel,
    arch: info.arch,
    scanIntervalMs: Math.round(info.scanIntervalMs * 10) / 10,
    listenEvents: info.listenEvents ?? null,
    agentPid: info.pid,
    agentStartedAt: new Date(info.startedAt).toISOString(),
    listeners: info.listeners,
  };
}
