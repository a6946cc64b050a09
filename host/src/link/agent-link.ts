// The host's link to the guest agent: on every SSH connect it opens the agent's unix socket through a streamlocal
// channel, speaks the protocol (hello, info, ports.subscribe) and turns port events into `snapshot`/`delta` events,
// asking for a fresh snapshot on a sequence gap. On link loss (SSH drop, agent restart) it reports `down` and keeps
// retrying while SSH is up; when the socket does not answer it asks `explainOpenFailure` whether starting the agent
// could help at all (not when sshd refuses the channel: then it reports `blocked`), and if so calls `ensureAgent`
// (which starts the guest agent). An agent that answers but is not this host's build (`outdated`), or speaks another
// protocol version, is handed to `ensureAgent` to be replaced, once per SSH connection (whatever answers on the socket
// cannot have the host reinstall in a loop): one still not this host's build afterwards is used as it is, and
// `outdated` says why. A link that is up is pinged: one whose agent stops answering (hung, or stopped) is taken down,
// and an agent that takes the connection but never says hello is replaced too (at most once a minute). Owns the Peer
// of the current link; it does not forward anything itself.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type AgentBye,
  type Hello,
  type Info,
  type Listener,
  Peer,
  type PortDelta,
  type PortSnapshot,
  ProtocolError,
  ProtocolVersionError,
  REMOTE_ENDED,
  RemoteError,
  RequestTimeoutError,
} from '@tether/protocol';
import { guestText } from '../inert-text.js';
import type { Logger } from '../log.js';
import { SshNotConnectedError, type SshSession } from '../ssh/index.js';

/**
 * How long a guest that said it shuts down is waited for before its agent is started again as for any lost link: a
 * reboot of a slow VM (TCG) takes a minute or two; a guest that stays down needs nothing started meanwhile anyway.
 */
const GUEST_STOPPING_WAIT_MS = 5 * 60_000;
/** How long the look at a reconnected guest's uptime may take (checkRebooted); a login shell on a slow VM is slow. */
const REBOOT_CHECK_TIMEOUT_MS = 20_000;

/**
 * Whether /proc/uptime's text says the guest booted less than `elapsedMs` ago. Its last line: a login shell may print
 * before it.
 */
export function bootedSince(procUptime: string, elapsedMs: number): boolean {
  const last = procUptime.trim().split('\n').pop() ?? '';
  const seconds = Number.parseFloat(last.trim().split(/\s+/)[0] ?? '');
  return Number.isFinite(seconds) && seconds >= 0 && seconds * 1000 < elapsedMs;
}

/**
 * A link that is up is pinged this often, and taken down when a ping gets no answer in LIVENESS_TIMEOUT_MS: a hung or
 * stopped guest agent keeps its socket and the channel open, and nothing else would notice.
 */
const LIVENESS_INTERVAL_MS = 5_000;
const LIVENESS_TIMEOUT_MS = 10_000;
/** How long the hello of a link after one whose agent stopped answering pings is waited for (lastDownUnanswered). */
const HUNG_HELLO_MS = 3_000;
/** A guest agent that does not answer is replaced at most this often. */
const HUNG_REPLACE_INTERVAL_MS = 60_000;
/** The guest is asked to scan at once (requestScan) at most this often; its own scans run every 100 ms or so. */
const SCAN_REQUEST_MS = 250;
/** The guest agent is started at most this often unless one served meanwhile (options: ensureIntervalMs). */
const ENSURE_INTERVAL_MS = 5_000;
/** An agent link up this long before it closed makes the next start of the agent immediate (ensureThrottleFrom). */
const SERVED_BEFORE_PROMPT_RESTART_MS = 10_000;

/** Why the link is down while the guest agent's last message said the guest shuts down (status: link.lastError). */
export const GUEST_STOPPING = 'the guest is shutting down';

/** Deltas kept while a snapshot is awaited; a guest sends a handful per scan. */
const MAX_HELD_DELTAS = 1_024;

/**
 * Links in a row closed by a protocol error, or closed within BRIEF_LINK_MS of coming up (an agent that drops every
 * link at once), after which retries back off further...
 */
const BREAKS_BEFORE_BACKOFF = 3;
/** A link that closes sooner than this after coming up counts towards the back-off, as a broken one does. */
const BRIEF_LINK_MS = 2_000;
/** ...up to this interval. */
const BROKEN_RETRY_MAX_MS = 30_000;

/** Names of ignored guest events logged per link (each once); past them, one line says more came. */
const MAX_IGNORED_EVENT_NAMES = 16;

export interface AgentLinkOptions {
  /** The guest agent's unix socket path in the guest. */
  socket: string;
  /** Component logger (`link`). */
  logger: Logger;
  /** This side's name in hello, e.g. `tether/0.1.0`. */
  agent: string;
  /**
   * Called when the socket does not answer (channel open failure): start or provision the guest agent. With
   * `replace`, an agent answers but must make way for this host's build (see `outdated`).
   */
  ensureAgent?: (reason: string, replace?: boolean) => Promise<void>;
  /**
   * Why a running agent is not the build this host ships (null when it is); `build` is null from an agent too old
   * to say. With ensureAgent such an agent is replaced; without, it serves and `outdated` says why.
   */
  outdated?: (info: Info, build: string | null) => string | null;
  /**
   * Called on a channel open failure before ensureAgent: resolves with a message when the cause is one that starting
   * the agent cannot fix (sshd refuses unix-socket forwarding to a running agent). The link then reports `blocked`,
   * does not call ensureAgent, and retries only every blockedRetryMs.
   */
  explainOpenFailure?: (err: Error) => Promise<string | null>;
  /** Retry interval while blocked (default 10 s). */
  blockedRetryMs?: number;
  /** Minimum time between two ensureAgent calls, unless an agent served for servedBeforePromptRestartMs between them. */
  ensureIntervalMs?: number;
  /** A link up this long before it closed makes the next ensureAgent call immediate (default 10 s). */
  servedBeforePromptRestartMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Retry interval cap after links in a row closed by the agent breaking the protocol (default 30 s). */
  brokenRetryMaxMs?: number;
  /** Deadline for hello, info and subscribe on a fresh link. */
  setupTimeoutMs?: number;
  /** How often a link that is up is pinged, and how long an answer may take (see LIVENESS_INTERVAL_MS). */
  livenessIntervalMs?: number;
  livenessTimeoutMs?: number;
}

/**
 * Events: `peer` (peer: Peer) as soon as a link is usable (register event handlers there), `up` (info: Info),
 * `snapshot` (listeners: Listener[]), `delta` (delta: PortDelta), `down` (reason: string), `blocked` (reason: string)
 * when the socket cannot be reached for a reason that starting the agent cannot fix, `guest-stopping` when the
 * guest agent said the guest is shutting down (guestStopping), `guest-rebooted` when a reconnect found that guest
 * booted since (guestStopping is null again).
 */
export class AgentLink extends EventEmitter {
  peer: Peer | null = null;
  info: Info | null = null;
  /** The linked agent's build hash (`agent.build`); null before the link is up or from an agent too old to say. */
  build: string | null = null;
  private refreshing: Promise<void> | null = null;
  up = false;
  /** Why the link is not up (last failure), for status and requirement details. */
  lastError: string | null = null;
  /** When lastError was last set (Date.now()). */
  lastErrorAt = 0;
  /**
   * Set while the socket is unreachable for a reason that starting the agent cannot fix (see explainOpenFailure), or
   * its agent speaks another protocol version and is not replaced (see incompatible).
   */
  blocked: string | null = null;
  /** The protocol version mismatch of the agent on the socket, while it blocks the link; null otherwise. */
  incompatible: string | null = null;
  /**
   * Why the agent in use is not this host's build, when replacing it failed or did not help, or nothing may replace
   * it (no ensureAgent); null otherwise.
   */
  outdated: string | null = null;
  private stoppingReason: string | null = null;
  /**
   * Date.now() of the guest's goodbye that set stoppingReason: compared with the guest's uptime, which goes on while
   * the host sleeps (performance.now() does not).
   */
  private stoppingSince = 0;
  /** performance.now() until which a guest that said it shuts down is waited for (GUEST_STOPPING_WAIT_MS). */
  private stoppingUntil = 0;
  /**
   * The last link ended because the agent stopped answering pings: it had its 10 s already, so the next link's hello
   * is waited for only HUNG_HELLO_MS before the agent is taken for hung (replaceHung).
   */
  private lastDownUnanswered = false;
  /** A requestScan is waiting for its answer. */
  private scanRequested = false;
  /** performance.now() of the last requestScan sent. */
  private lastScanRequest = Number.NEGATIVE_INFINITY;
  /** The guest socket paths to have watched (watchSockets), sent again on every link. */
  private watchedSockets: string[] = [];
  /** performance.now() of the last replacement of an agent that did not answer (replaceHung). */
  private lastHungReplace = Number.NEGATIVE_INFINITY;

  private readonly log: Logger;
  private generation = 0;
  private stopped = false;
  private seq: number | null = null;
  private held: PortDelta[] | null = null;
  /** performance.now() of the last ensureAgent call: a wall-clock step must not stall or hurry restarts. */
  private lastEnsure = Number.NEGATIVE_INFINITY;
  /**
   * Where ensureIntervalMs counts from: the last ensureAgent call, unless an agent has served for a while since. An
   * agent that crashes at start is started at most every ensureIntervalMs; one that served, and then was killed or
   * crashed, is started again at once.
   */
  private ensureThrottleFrom = Number.NEGATIVE_INFINITY;
  /** The agent did not answer and ensureThrottleFrom held its start back (nextStartAt); cleared by the next try. */
  private startHeldBack = false;
  /** A replacement was tried on this SSH connection. */
  private replaceTried = false;
  private socketPath: string;
  private readonly abort = new AbortController();
  private readonly onConnected = () => this.restart();
  private readonly onDisconnected = (reason: string) => this.peer?.close(`ssh connection lost: ${reason}`);

  constructor(
    private readonly ssh: SshSession,
    private readonly opts: AgentLinkOptions,
  ) {
    super();
    this.log = opts.logger;
    this.socketPath = opts.socket;
  }

  /**
   * Set when the guest agent's last message (agent.bye) said the guest is shutting down: until an agent answers again,
   * for at most GUEST_STOPPING_WAIT_MS, the link neither starts the agent nor calls its absence a problem. An SSH
   * reconnect alone does not end it (sshd may still take logins in a guest that is going down); one to a guest that
   * booted since does (checkRebooted).
   */
  get guestStopping(): string | null {
    if (this.stoppingReason !== null && performance.now() > this.stoppingUntil) this.stoppingReason = null;
    return this.stoppingReason;
  }

  /**
   * While a start of the guest agent is held back (it did not answer, but the last start was less than
   * ensureIntervalMs ago and its agent did not serve for long): when that start may run (Date.now() scale), for
   * `status` and for `doctor`, which waits for it instead of reporting an agent that is about to come back. Null when
   * no start is held back: the link is up, SSH is down, or a start runs at the next try anyway.
   */
  get nextStartAt(): number | null {
    if (!this.startHeldBack || this.up || this.stopped || !this.ssh.connected) return null;
    const interval = this.opts.ensureIntervalMs ?? ENSURE_INTERVAL_MS;
    return Date.now() + Math.max(0, this.ensureThrottleFrom + interval - performance.now());
  }

  /** The guest agent's socket: `socket` from the options until provisioning moves it (useSocket). */
  get socket(): string {
    return this.socketPath;
  }

  /** The agent was started on another socket (the login user's own: provision/ensure.ts agentSocket). */
  useSocket(path: string): void {
    if (path === this.socketPath) return;
    this.log.info({ socket: path, was: this.socketPath }, `guest agent socket is ${path}`);
    this.socketPath = path;
  }

  start(): void {
    this.ssh.on('connected', this.onConnected);
    this.ssh.on('disconnected', this.onDisconnected);
    if (this.ssh.connected) this.restart();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.ssh.off('connected', this.onConnected);
    this.ssh.off('disconnected', this.onDisconnected);
    this.peer?.close('host agent stopping');
  }

  /**
   * Asks the guest agent for fresh info (its scan interval adapts to load); keeps the last info when the answer is
   * late, and does nothing while the link is down (info is null then). Callers at the same time share one request.
   * Never rejects.
   */
  refreshInfo(timeoutMs = 1_000): Promise<void> {
    const peer = this.peer;
    if (!this.up || !peer) return Promise.resolve();
    this.refreshing ??= Promise.race([peer.request('info', {}), sleep(timeoutMs, null, { ref: false })])
      .then(
        (info) => {
          if (info && this.up && this.peer === peer) this.info = inertInfo(info);
        },
        () => {
          // The link is going down; its own handling reports why.
        },
      )
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /**
   * Resolves once the link is up (info known); rejects after timeoutMs with the last failure, or at once when the link
   * is blocked (waiting cannot help then).
   */
  waitUp(timeoutMs: number): Promise<Info> {
    if (this.up && this.info) return Promise.resolve(this.info);
    if (this.blocked) return Promise.reject(new Error(this.blocked));
    return new Promise((resolve, reject) => {
      const settle = (err: Error | null, info?: Info) => {
        clearTimeout(timer);
        this.off('up', onUp);
        this.off('blocked', onBlocked);
        if (err) reject(err);
        else resolve(info!);
      };
      const onUp = (info: Info) => settle(null, info);
      const onBlocked = (reason: string) => settle(new Error(reason));
      const timer = setTimeout(
        () =>
          settle(
            new Error(
              `guest agent at ${this.socket} not answering after ${timeoutMs} ms: ${this.lastError ?? 'no link yet'}`,
            ),
          ),
        timeoutMs,
      );
      this.once('up', onUp);
      this.once('blocked', onBlocked);
    });
  }

  private restart(): void {
    if (this.stopped) return;
    // A new SSH connection gets sshd's current settings: whether it still refuses the channel is for it to tell.
    this.blocked = null;
    this.incompatible = null;
    this.replaceTried = false;
    // A new connection (a VM resumed, a guest back): its agent gets the full wait for its hello.
    this.lastDownUnanswered = false;
    const gen = ++this.generation;
    if (this.stoppingReason !== null) void this.checkRebooted(gen);
    this.run(gen).catch((err) => this.log.error({ err }, `agent link loop failed: ${(err as Error).message}`));
  }

  /**
   * A guest that said it shuts down takes logins again: when it booted since its goodbye (its uptime is shorter), the
   * wait for its agent ends here instead of after GUEST_STOPPING_WAIT_MS. A VM whose disk is reset at stop comes back
   * without the agent, and only the link starting it (provisioning) brings forwards and mounts back.
   */
  private async checkRebooted(gen: number): Promise<void> {
    let uptime: string;
    try {
      uptime = (await this.ssh.execText('cat /proc/uptime', REBOOT_CHECK_TIMEOUT_MS)).stdout;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'cannot read the guest uptime; waiting for the guest agent');
      return;
    }
    if (!this.active(gen) || this.stoppingReason === null) return;
    if (!bootedSince(uptime, Date.now() - this.stoppingSince)) return;
    this.log.info('the guest booted again since it said it shuts down; no longer waiting for its agent');
    this.stoppingReason = null;
    this.lastError = null;
    this.emit('guest-rebooted');
  }

  private active(gen: number): boolean {
    return !this.stopped && gen === this.generation && this.ssh.connected;
  }

  private async run(gen: number): Promise<void> {
    const initial = this.opts.retryInitialMs ?? 100;
    const max = this.opts.retryMaxMs ?? 2_000;
    let delay = initial;
    const brokenMax = this.opts.brokenRetryMaxMs ?? BROKEN_RETRY_MAX_MS;
    // Links in a row that the agent broke the protocol on after its hello, or that ended right after coming up (a
    // broken or hostile agent): it would otherwise be linked anew, and its forwards resumed and suspended, every few
    // hundred ms.
    let broken = 0;
    while (this.active(gen)) {
      const result = await this.session(gen);
      if (result === 'was-up' || result === 'broke' || result === 'brief') {
        broken = result === 'was-up' ? 0 : broken + 1;
        if (broken === BREAKS_BEFORE_BACKOFF) {
          const what =
            result === 'broke'
              ? `broke the protocol on ${broken} links in a row`
              : `ended ${broken} links in a row within ${BRIEF_LINK_MS / 1000} s of their start`;
          this.log.warn({ broken }, `the guest agent ${what}; trying it less often, up to every ${brokenMax / 1000} s`);
        }
        delay = broken >= BREAKS_BEFORE_BACKOFF ? Math.max(delay, max) : initial;
      }
      if (!this.active(gen)) return;
      // Blocked: an SSH connection keeps the sshd settings it was opened with, so a quick retry cannot succeed.
      const wait = result === 'blocked' ? Math.max(delay, this.opts.blockedRetryMs ?? 10_000) : delay;
      try {
        await sleep(wait, undefined, { signal: this.abort.signal });
      } catch {
        return; // stopped
      }
      delay = Math.min(broken >= BREAKS_BEFORE_BACKOFF ? brokenMax : max, delay * 2);
    }
  }

  /** One link: open the channel, greet the agent, serve until the link closes. */
  private async session(gen: number): Promise<'was-up' | 'brief' | 'broke' | 'failed' | 'blocked'> {
    const channel = await this.openChannel(gen);
    if (typeof channel === 'string') return channel;
    const { peer, closed, closeError } = this.newPeer(channel);
    const shaken = await this.handshake(peer, closeError);
    if (shaken !== 'up') return shaken;
    const upAt = performance.now();
    await this.serveUntilClosed(peer, closed);
    const served = this.opts.servedBeforePromptRestartMs ?? SERVED_BEFORE_PROMPT_RESTART_MS;
    const upFor = performance.now() - upAt;
    if (upFor >= served) this.ensureThrottleFrom = Number.NEGATIVE_INFINITY;
    if (closeError() instanceof ProtocolError) return 'broke';
    return upFor < BRIEF_LINK_MS ? 'brief' : 'was-up';
  }

  /** The streamlocal channel to the agent's socket, or why there is none ('blocked': a restart cannot help). */
  private async openChannel(gen: number): Promise<Duplex | 'failed' | 'blocked'> {
    let channel: Awaited<ReturnType<SshSession['openStreamLocal']>>;
    try {
      channel = await this.ssh.openStreamLocal(this.socket);
    } catch (err) {
      const message = (err as Error).message;
      this.incompatible = null; // no agent answers there now
      if (err instanceof SshNotConnectedError) {
        this.noteFailure(message);
        return 'failed';
      }
      const blocked = await this.explain(err as Error);
      if (!this.active(gen)) return 'failed';
      if (blocked) {
        this.noteBlocked(blocked);
        return 'blocked';
      }
      this.blocked = null;
      this.noteFailure(message);
      await this.maybeEnsureAgent(message);
      return 'failed';
    }
    if (!this.active(gen)) {
      channel.destroy();
      return 'failed';
    }
    return channel;
  }

  /** The link's peer, with its logging and event handlers; `closed` resolves with the reason it closed. */
  private newPeer(channel: Duplex): { peer: Peer; closed: Promise<string>; closeError: () => Error | undefined } {
    const peer = new Peer(channel, { agent: this.opts.agent, timeoutMs: this.opts.setupTimeoutMs ?? 10_000 });
    let closeError: Error | undefined;
    const closed = new Promise<string>((resolve) =>
      peer.once('close', (reason: string, error?: Error) => {
        closeError = error;
        resolve(reason);
      }),
    );
    peer.on('handlerError', (name: string, err: Error) =>
      this.log.error({ err, event: name }, `handling ${name} failed: ${err.message}`),
    );
    // A guest may flood events the host never handles (fs.events go the other way), or endless new names: one line
    // per name per link, for the first few names.
    const ignored = new Set<string>();
    const logIgnored = (name: string, msg: string) => {
      if (ignored.has(name) || ignored.size > MAX_IGNORED_EVENT_NAMES) return;
      ignored.add(name);
      if (ignored.size > MAX_IGNORED_EVENT_NAMES)
        this.log.warn(
          { names: MAX_IGNORED_EVENT_NAMES },
          `the guest sends events of more than ${MAX_IGNORED_EVENT_NAMES} names the host ignores; no more are logged on this link`,
        );
      else this.log.warn({ event: name }, msg);
    };
    peer.on('unhandled', (name: string) =>
      logIgnored(name, `ignoring ${name} events from the guest: the host does not handle them`),
    );
    peer.on('unknownEvent', (name: string) =>
      logIgnored(name, `ignoring unknown event ${name} from the guest (a newer tether-guest?)`),
    );
    this.peer = peer;
    this.seq = null;
    this.held = [];
    peer.onEvent('ports.delta', (d) => this.onDelta(peer, d));
    peer.onEvent('agent.bye', (bye) => this.onBye(bye));
    peer.onEvent('sockets.changed', ({ path }) => {
      if (peer === this.peer) this.emit('socket-changed', path);
    });
    return { peer, closed, closeError: () => closeError };
  }

  /**
   * Hello, info and build; an agent of another build or protocol is replaced, a silent one taken for hung. Then the
   * subscription: the link is up with the agent's snapshot applied. 'blocked' when the agent speaks another protocol
   * and is not replaced: only someone replacing it can help.
   */
  private async handshake(peer: Peer, closeError: () => Error | undefined): Promise<'up' | 'failed' | 'blocked'> {
    try {
      const full = this.opts.setupTimeoutMs ?? 10_000;
      const { hello, info, build } = await greet(
        peer,
        this.socket,
        this.lastDownUnanswered ? Math.min(full, HUNG_HELLO_MS) : full,
      );
      if (await this.replaced(peer, this.outdatedReason(info, build))) return 'failed';
      this.emit('peer', peer);
      const snapshot = await peer.request('ports.subscribe', {});
      this.info = info;
      this.build = build;
      this.up = true;
      this.startHeldBack = false;
      this.lastDownUnanswered = false;
      this.lastError = null;
      this.blocked = null;
      this.incompatible = null;
      this.stoppingReason = null;
      this.log.info(
        {
          state: 'up',
          agent: hello.agent,
          guestPid: info.pid,
          socket: this.socket,
          build,
          listeners: snapshot.listeners.length,
        },
        // The build tells agents of one version apart: which one a replacement brought up.
        `agent link up: ${hello.agent}${build ? ` (build ${build})` : ''} pid ${info.pid} at ${this.socket}`,
      );
      this.emit('up', info);
      this.applySnapshot(peer, snapshot);
      if (this.watchedSockets.length > 0) this.sendSocketWatch(peer);
      return 'up';
    } catch (err) {
      const message = `agent link setup failed: ${(err as Error).message}`;
      const versionError = closeError();
      // The same agent that blocks the link, met again at a retry: said once already.
      if (!(versionError instanceof ProtocolVersionError && versionError.message === this.incompatible))
        this.noteFailure(message);
      peer.close(message);
      if (this.peer === peer) this.peer = null;
      if (versionError instanceof ProtocolVersionError) {
        if (await this.replaced(peer, versionError.message)) return 'failed';
        // Kept (provisioning is off, or it was replaced already on this connection): no retry can talk to it.
        this.incompatible = versionError.message;
        this.noteBlocked(
          `${versionError.message}: this host's tether cannot use that guest agent until it is replaced`,
        );
        return 'blocked';
      }
      // The socket takes connections but nothing answers on it: a hung or stopped agent, to be replaced.
      if (err instanceof HelloTimeoutError || err instanceof RequestTimeoutError)
        await this.replaceHung((err as Error).message);
      return 'failed';
    }
  }

  /** Pings the agent while the link is up; once it closes, the link is down with the reason. */
  private async serveUntilClosed(peer: Peer, closed: Promise<string>): Promise<void> {
    const liveness = this.watchLiveness(peer);
    const reason = await closed;
    clearInterval(liveness);
    if (this.peer === peer) this.peer = null;
    this.up = false;
    this.info = null;
    this.emit('socket-watch', false);
    const why =
      this.guestStopping ??
      (reason === REMOTE_ENDED
        ? `the guest agent ended the connection on ${this.socket} (it exited or restarted)`
        : reason);
    this.lastError = why;
    this.lastErrorAt = Date.now();
    const fields = { state: 'down', reason: why, socket: this.socket };
    if (this.guestStopping) this.log.info(fields, `agent link down: ${why}; waiting for the guest to come back`);
    else if (this.stopped)
      this.log.info(fields, `agent link down: ${why}`); // `tether down`: nothing went wrong
    else this.log.warn(fields, `agent link down: ${why}`);
    this.emit('down', why);
  }

  /** Pings `peer` while it is up; one that gets no answer in time takes the link down (the loop then retries). */
  private watchLiveness(peer: Peer): NodeJS.Timeout {
    const every = this.opts.livenessIntervalMs ?? LIVENESS_INTERVAL_MS;
    const within = this.opts.livenessTimeoutMs ?? LIVENESS_TIMEOUT_MS;
    let pinging = false;
    const timer = setInterval(() => {
      if (pinging) return;
      pinging = true;
      peer.ping(within).then(
        () => {
          pinging = false;
        },
        (err: Error) => {
          if (!(err instanceof RequestTimeoutError)) return;
          this.lastDownUnanswered = true;
          peer.close(
            `the guest agent did not answer a ping within ${within} ms (the agent is hung or stopped, the whole VM is paused, or the SSH link stalls)`,
          );
        },
      );
    }, every);
    timer.unref();
    return timer;
  }

  private noteFailure(message: string): void {
    if (message !== this.lastError) {
      // Before the first start attempt a missing agent is the expected case that provisioning handles, not a problem.
      // Nor is what fails because the host agent is stopping (`tether down` mid-start): nothing went wrong.
      const expected =
        this.stopped ||
        this.guestStopping !== null ||
        (this.lastEnsure === Number.NEGATIVE_INFINITY && this.opts.ensureAgent !== undefined);
      if (expected) this.log.info({ socket: this.socket }, message);
      else this.log.warn({ socket: this.socket }, message);
    }
    this.lastError = message;
    this.lastErrorAt = Date.now();
  }

  /** The guest agent's last message: when the guest is shutting down, wait for it rather than restart the agent. */
  private onBye(bye: AgentBye): void {
    const reason = guestText(bye.reason);
    this.log.info({ reason }, `guest agent stopping: ${reason}`);
    if (!bye.systemStopping) return;
    this.stoppingReason = GUEST_STOPPING;
    this.stoppingSince = Date.now();
    this.stoppingUntil = performance.now() + GUEST_STOPPING_WAIT_MS;
    this.emit('guest-stopping');
  }

  /** The explainOpenFailure verdict; a failing check (e.g. the connection dropped) explains nothing. */
  private async explain(err: Error): Promise<string | null> {
    const explain = this.opts.explainOpenFailure;
    if (!explain) return null;
    try {
      return await explain(err);
    } catch (checkErr) {
      this.log.debug({ err: checkErr }, `cannot tell why ${this.socket} does not answer`);
      return null;
    }
  }

  private noteBlocked(message: string): void {
    this.startHeldBack = false;
    if (message !== this.blocked) {
      this.log.error({ socket: this.socket }, message);
      this.blocked = message;
      this.lastError = message;
      this.lastErrorAt = Date.now();
      this.emit('blocked', message);
    }
  }

  private markEnsure(): void {
    this.lastEnsure = performance.now();
    this.ensureThrottleFrom = this.lastEnsure;
  }

  private async maybeEnsureAgent(reason: string): Promise<void> {
    const ensure = this.opts.ensureAgent;
    const interval = this.opts.ensureIntervalMs ?? ENSURE_INTERVAL_MS;
    this.startHeldBack = !!ensure && !this.guestStopping && performance.now() - this.ensureThrottleFrom < interval;
    if (!ensure || this.guestStopping || this.startHeldBack) return;
    this.markEnsure();
    try {
      this.log.info(
        { socket: this.socket, reason },
        'guest agent not answering; provisioning looks at the guest and starts it (or waits for systemd to)',
      );
      this.lastDownUnanswered = false;
      await ensure(reason);
    } catch (err) {
      this.noteFailure(`cannot start the guest agent: ${(err as Error).message}`);
    }
  }

  private outdatedReason(info: Info, build: string | null): string | null {
    const reason = this.opts.outdated?.(info, build) ?? null;
    if (!reason) this.outdated = null;
    else if (!this.opts.ensureAgent && reason !== this.outdated) {
      // Nothing here may replace it: it serves, and the log and status say that it is not this host's build.
      this.outdated = reason;
      this.log.warn({ socket: this.socket, outdated: true }, reason);
    }
    return this.opts.ensureAgent ? reason : null;
  }

  /**
   * Replaces an agent that is not this host's build, once per SSH connection; true when it did (the link then starts
   * over with the new agent). An agent still not this host's build afterwards is kept, and `outdated` says why.
   */
  private async replaced(peer: Peer, reason: string | null): Promise<boolean> {
    const ensure = this.opts.ensureAgent;
    if (!reason || !ensure) return false;
    if (this.replaceTried) {
      if (this.outdated === null) {
        this.outdated = `${reason}, though it was replaced on this SSH connection`;
        this.log.warn({ socket: this.socket, outdated: true }, this.outdated);
      }
      return false;
    }
    this.replaceTried = true;
    this.log.info({ socket: this.socket, reason }, `${reason}; replacing it`);
    peer.close(`replacing the guest agent: ${reason}`);
    if (this.peer === peer) this.peer = null;
    this.markEnsure();
    try {
      await ensure(reason, true);
    } catch (err) {
      const message = (err as Error).message;
      this.outdated = `${reason}; replacing it failed: ${message}`;
      this.noteFailure(`cannot replace the guest agent: ${message}`);
    }
    return true;
  }

  /**
   * The socket takes connections but the agent behind it does not answer (hung, or stopped): it is stopped and
   * started again, at most once per HUNG_REPLACE_INTERVAL_MS (what holds the socket may not be ours to stop).
   */
  private async replaceHung(why: string): Promise<void> {
    const ensure = this.opts.ensureAgent;
    if (!ensure || this.guestStopping || performance.now() - this.lastHungReplace < HUNG_REPLACE_INTERVAL_MS) return;
    this.lastHungReplace = performance.now();
    this.markEnsure();
    const reason = `the guest agent at ${this.socket} does not answer (${why})`;
    this.log.warn({ socket: this.socket, reason }, `${reason}; replacing it`);
    // The agent started in its place gets the full wait for its hello.
    this.lastDownUnanswered = false;
    try {
      await ensure(reason, true);
    } catch (err) {
      this.noteFailure(`cannot replace the guest agent that does not answer: ${(err as Error).message}`);
    }
  }

  /**
   * Asks the guest agent to scan now rather than at its next tick; what changed comes as the usual delta. One request
   * at a time, and at most one per SCAN_REQUEST_MS: a client retrying a closed port in a loop must not keep the guest
   * sending its whole listener table (the request answers with it).
   */
  requestScan(): void {
    const peer = this.peer;
    const now = performance.now();
    if (!peer || this.scanRequested || now - this.lastScanRequest < SCAN_REQUEST_MS) return;
    this.scanRequested = true;
    this.lastScanRequest = now;
    peer
      .request('ports.snapshot', {})
      .catch((err: Error) => this.log.debug({ err: err.message }, 'asking the guest agent to scan failed'))
      .finally(() => {
        this.scanRequested = false;
      });
  }

  /**
   * The guest socket paths the host forwards: the guest agent says when one changes (`socket-changed`), on this link
   * and every later one. `socket-watch` tells whether it does (false: an agent from before `sockets.watch`).
   */
  watchSockets(paths: string[]): void {
    this.watchedSockets = paths;
    if (this.peer && this.up) this.sendSocketWatch(this.peer);
  }

  private sendSocketWatch(peer: Peer): void {
    peer.request('sockets.watch', { paths: this.watchedSockets }).then(
      () => {
        if (peer === this.peer) this.emit('socket-watch', true);
      },
      (err: Error) => {
        this.log.debug({ err: err.message }, `the guest agent does not watch socket paths: ${err.message}`);
        if (peer === this.peer) this.emit('socket-watch', false);
      },
    );
  }

  private applySnapshot(peer: Peer, snapshot: PortSnapshot): void {
    if (peer !== this.peer) return;
    this.seq = snapshot.seq;
    this.emit('snapshot', inertListeners(snapshot.listeners));
    const held = this.held ?? [];
    this.held = null;
    for (const d of held) this.onDelta(peer, d);
  }

  private onDelta(peer: Peer, delta: PortDelta): void {
    if (peer !== this.peer) return;
    if (this.held) {
      // Subscribe or resync in flight: applied after the snapshot. A guest that floods deltas meanwhile has them
      // dropped (the snapshot's seq makes later ones look like a gap, which asks for a fresh snapshot).
      if (this.held.length < MAX_HELD_DELTAS) this.held.push(delta);
      return;
    }
    if (this.seq !== null && delta.seq <= this.seq) {
      // Already covered by a snapshot (or a guest counting backwards: the next gap asks for a snapshot anyway).
      this.log.debug({ got: delta.seq, held: this.seq }, 'port delta at or below the sequence held; dropped');
      return;
    }
    if (this.seq !== null && delta.seq !== this.seq + 1) {
      this.log.warn({ expected: this.seq + 1, got: delta.seq }, 'port event sequence gap; asking for a snapshot');
      this.held = [];
      peer.request('ports.snapshot', {}).then(
        (s) => this.applySnapshot(peer, s),
        (err: Error) => peer.close(`ports.snapshot failed: ${err.message}`),
      );
      return;
    }
    this.seq = delta.seq;
    this.emit('delta', { ...delta, added: inertListeners(delta.added), removed: inertListeners(delta.removed) });
  }
}

/** Info with its text made inert (../inert-text.ts): it reaches the log, `status` and `up`'s lines. */
function inertInfo(info: Info): Info {
  const { version, kernel, arch, hostname, caps, listenEvents } = info;
  return {
    ...info,
    version: guestText(version),
    kernel: guestText(kernel),
    arch: guestText(arch),
    hostname: guestText(hostname),
    caps: caps.map(guestText),
    ...(listenEvents ? { listenEvents: { ...listenEvents, detail: guestText(listenEvents.detail) } } : {}),
  };
}

/** Listeners with their process command lines made inert, as one line each. */
function inertListeners(listeners: readonly Listener[]): Listener[] {
  return listeners.map((l) => {
    const command = l.command === null ? null : guestText(l.command);
    return command === l.command ? l : { ...l, command }; // a snapshot may hold 100,000: copy only what changes
  });
}

/**
 * The first exchange with the guest agent at `socket` on a new peer: its hello (within `timeoutMs`, else
 * HelloTimeoutError), its info and its build. Shared by the link and `doctor`.
 */
export async function greet(
  peer: Peer,
  socket: string,
  timeoutMs: number,
): Promise<{ hello: Hello; info: Info; build: string | null }> {
  const hello = await Promise.race([
    peer.ready,
    sleep(timeoutMs, null, { ref: false }).then((): never => {
      throw new HelloTimeoutError(`no hello from ${socket} within ${timeoutMs} ms`);
    }),
  ]);
  const info = inertInfo(await peer.request('info', {}));
  const build = await agentBuild(peer);
  return { hello: { ...hello, agent: guestText(hello.agent) }, info, build: build && guestText(build) };
}

/**
 * The agent's build hash, or null from an agent that does not say (older than the `agent.build` method: it answers
 * unknown_method; any refusal counts the same).
 */
async function agentBuild(peer: Peer): Promise<string | null> {
  try {
    return (await peer.request('agent.build', {})).build;
  } catch (err) {
    if (err instanceof RemoteError) return null;
    throw err;
  }
}

/** The socket took the connection, but no hello came in time. */
class HelloTimeoutError extends Error {
  override name = 'HelloTimeoutError';
}
