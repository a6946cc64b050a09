// The host's link to the guest agent: on every SSH connect it opens the agent's unix socket through a streamlocal
// channel, greets the agent (greet.ts), subscribes to its ports (port-feed.ts) and serves until the link closes, then
// tries again (retry-delay.ts) while SSH is up. When the socket does not answer it asks `explainOpenFailure` whether
// starting the agent could help at all (not when sshd refuses the channel: then it reports `blocked`), and if so has
// the agent started (agent-starts.ts); an agent that is not this host's build, speaks another protocol version, or
// stops answering (liveness.ts) is replaced the same way. A guest that said it shuts down is waited for instead
// (guest-shutdown.ts). Owns the Peer of the current link and the link's status; it does not forward anything itself.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Info, type Peer, ProtocolVersionError, RequestTimeoutError } from '@tether/protocol';
import { firstOutcome } from '../first-outcome.js';
import type { Logger } from '../log.js';
import { SshNotConnectedError, type SshSession } from '../ssh/index.js';
import { AgentStarts, type StartOptions } from './agent-starts.js';
import { greet, HelloTimeoutError, inertInfo } from './greet.js';
import { type GuestPeer, guestPeer } from './guest-peer.js';
import { GuestShutdown } from './guest-shutdown.js';
import { LinkStatus } from './link-status.js';
import { Liveness, type LivenessOptions } from './liveness.js';
import { PortFeed } from './port-feed.js';
import { endOfLink, type LinkEnd, RetryDelay, type RetryOptions } from './retry-delay.js';
import { ScanRequests } from './scan-requests.js';
import { SocketWatch } from './socket-watch.js';

/** Deadline for hello, info and subscribe on a fresh link (options: setupTimeoutMs). */
const SETUP_TIMEOUT_MS = 10_000;

export interface AgentLinkOptions extends StartOptions, RetryOptions, LivenessOptions {
  /** The guest agent's unix socket path in the guest. */
  socket: string;
  /** Component logger (`link`). */
  logger: Logger;
  /** This side's name in hello, e.g. `tether/0.1.0`. */
  agent: string;
  /** Deadline for hello, info and subscribe on a fresh link. */
  setupTimeoutMs?: number;
}

/** The current link's peer and its port feed. */
interface LinkPeer extends GuestPeer {
  ports: PortFeed;
}

/**
 * Events: `peer` (peer: Peer) as soon as a link is usable (register event handlers there), `up` (info: Info),
 * `snapshot` (listeners: Listener[]), `delta` (delta: PortDelta), `down` (reason: string), `blocked` (reason: string)
 * when the socket cannot be reached for a reason that starting the agent cannot fix, `guest-stopping` when the
 * guest agent said the guest is shutting down (guestStopping), `guest-rebooted` when a reconnect found that guest
 * booted since (guestStopping is null again), `socket-changed` (path) and `socket-watch` (on) for watchSockets.
 */
export class AgentLink extends EventEmitter {
  peer: Peer | null = null;
  info: Info | null = null;
  /** The linked agent's build hash (`agent.build`); null before the link is up or from an agent too old to say. */
  build: string | null = null;
  up = false;

  private readonly log: Logger;
  private readonly status: LinkStatus;
  private readonly shutdown: GuestShutdown;
  private readonly liveness: Liveness;
  private readonly starts: AgentStarts;
  private readonly scans: ScanRequests;
  private readonly sockets: SocketWatch;
  private refreshing: Promise<void> | null = null;
  private generation = 0;
  private stopped = false;
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
    this.shutdown = new GuestShutdown(this.log);
    this.liveness = new Liveness(opts);
    this.starts = new AgentStarts(opts, {
      log: this.log,
      socket: () => this.socket,
      guestStopping: () => this.guestStopping,
      fail: (message) => this.status.failed(message),
      fresh: () => this.liveness.forget(),
    });
    this.scans = new ScanRequests(this.log);
    this.status = new LinkStatus(this.log, {
      socket: () => this.socket,
      stopping: () => this.stopped,
      guestStopping: () => this.guestStopping,
      firstStartPending: () => this.starts.firstPending,
    });
    this.sockets = new SocketWatch(
      this.log,
      (peer) => peer === this.peer,
      (on) => this.emit('socket-watch', on),
    );
  }

  /** Why the link is not up (last failure), for status and requirement details (see link-status.ts). */
  get lastError(): string | null {
    return this.status.lastError;
  }

  /** When lastError was last set (Date.now()). */
  get lastErrorAt(): number {
    return this.status.lastErrorAt;
  }

  /** Why the socket is unreachable in a way that neither a retry nor a start of the agent can fix; null otherwise. */
  get blocked(): string | null {
    return this.status.blocked;
  }

  /** The protocol version mismatch of the agent on the socket, while it blocks the link; null otherwise. */
  get incompatible(): string | null {
    return this.status.incompatible;
  }

  /**
   * Set when the guest agent's last message (agent.bye) said the guest is shutting down: until an agent answers again
   * the link neither starts the agent nor calls its absence a problem (see guest-shutdown.ts).
   */
  get guestStopping(): string | null {
    return this.shutdown.stopping;
  }

  /**
   * While a start of the guest agent is held back (it did not answer, but the last start was less than
   * ensureIntervalMs ago and its agent did not serve for long): when that start may run (Date.now() scale), for
   * `status` and for `doctor`, which waits for it instead of reporting an agent that is about to come back. Null when
   * no start is held back: the link is up, SSH is down, or a start runs at the next try anyway.
   */
  get nextStartAt(): number | null {
    if (this.up || this.stopped || !this.ssh.connected) return null;
    return this.starts.heldBackUntil();
  }

  /**
   * Why the agent in use is not this host's build, when replacing it failed or did not help, or nothing may replace
   * it (no ensureAgent); null otherwise.
   */
  get outdated(): string | null {
    return this.starts.outdated;
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
    const deadline = {
      ms: timeoutMs,
      error: () =>
        new Error(
          `guest agent at ${this.socket} not answering after ${timeoutMs} ms: ${this.lastError ?? 'no link yet'}`,
        ),
    };
    return firstOutcome<Info>(({ done, fail }) => {
      const onBlocked = (reason: string) => fail(new Error(reason));
      this.once('up', done);
      this.once('blocked', onBlocked);
      return () => {
        this.off('up', done);
        this.off('blocked', onBlocked);
      };
    }, deadline);
  }

  /** Asks the guest agent to scan now rather than at its next tick (see scan-requests.ts). */
  requestScan(): void {
    this.scans.request(this.peer);
  }

  /**
   * The guest socket paths the host forwards: the guest agent says when one changes (`socket-changed`), on this link
   * and every later one. `socket-watch` tells whether it does (false: an agent from before `sockets.watch`).
   */
  watchSockets(paths: string[]): void {
    this.sockets.set(paths, this.up ? this.peer : null);
  }

  private restart(): void {
    if (this.stopped) return;
    this.status.newConnection();
    this.starts.newConnection();
    this.liveness.forget();
    const gen = ++this.generation;
    void this.checkRebooted(gen);
    this.run(gen).catch((err) => this.log.error({ err }, `agent link loop failed: ${(err as Error).message}`));
  }

  /** A guest that said it shuts down takes logins again: when it booted since, the wait for its agent ends here. */
  private async checkRebooted(gen: number): Promise<void> {
    if (!(await this.shutdown.rebooted(this.ssh, () => this.active(gen)))) return;
    this.status.lastError = null;
    this.emit('guest-rebooted');
  }

  private active(gen: number): boolean {
    return !this.stopped && gen === this.generation && this.ssh.connected;
  }

  private async run(gen: number): Promise<void> {
    const retry = new RetryDelay(this.opts, this.log);
    while (this.active(gen)) {
      const wait = retry.after(await this.session(gen));
      if (!this.active(gen)) return;
      try {
        await sleep(wait, undefined, { signal: this.abort.signal });
      } catch {
        return; // stopped
      }
    }
  }

  /** One link: open the channel, greet the agent, serve until the link closes. */
  private async session(gen: number): Promise<LinkEnd> {
    const channel = await this.openChannel(gen);
    if (typeof channel === 'string') return channel;
    const link = this.newPeer(channel);
    const shaken = await this.handshake(link);
    if (shaken !== 'up') return shaken;
    const upAt = performance.now();
    await this.serveUntilClosed(link);
    const upFor = performance.now() - upAt;
    this.starts.served(upFor);
    return endOfLink(upFor, link.closeError());
  }

  /** The streamlocal channel to the agent's socket, or why there is none ('blocked': a restart cannot help). */
  private async openChannel(gen: number): Promise<Duplex | 'failed' | 'blocked'> {
    let channel: Awaited<ReturnType<SshSession['openStreamLocal']>>;
    try {
      channel = await this.ssh.openStreamLocal(this.socket);
    } catch (err) {
      return this.noAnswer(gen, err as Error);
    }
    if (!this.active(gen)) {
      channel.destroy();
      return 'failed';
    }
    return channel;
  }

  /** The socket did not take the channel: blocked, or the agent is started (agent-starts.ts decides when). */
  private async noAnswer(gen: number, err: Error): Promise<'failed' | 'blocked'> {
    this.status.incompatible = null; // no agent answers there now
    if (err instanceof SshNotConnectedError) {
      this.status.failed(err.message);
      return 'failed';
    }
    const blocked = await this.starts.cannotHelp(err);
    if (!this.active(gen)) return 'failed';
    if (blocked) {
      this.noteBlocked(blocked);
      return 'blocked';
    }
    this.status.blocked = null;
    this.status.failed(err.message);
    await this.starts.startIfDown(err.message);
    return 'failed';
  }

  /** The link's peer, made the current one, with the guest's events routed to the link's. */
  private newPeer(channel: Duplex): LinkPeer {
    const link = guestPeer(
      channel,
      { agent: this.opts.agent, timeoutMs: this.opts.setupTimeoutMs ?? SETUP_TIMEOUT_MS },
      this.log,
    );
    const { peer } = link;
    this.peer = peer;
    const ports = new PortFeed(
      peer,
      () => peer === this.peer,
      {
        snapshot: (listeners) => this.emit('snapshot', listeners),
        delta: (delta) => this.emit('delta', delta),
      },
      this.log,
    );
    peer.onEvent('agent.bye', (bye) => {
      if (this.shutdown.noteBye(bye)) this.emit('guest-stopping');
    });
    peer.onEvent('sockets.changed', ({ path }) => {
      if (peer === this.peer) this.emit('socket-changed', path);
    });
    return { ...link, ports };
  }

  /**
   * Hello, info and build; an agent of another build or protocol is replaced, a silent one taken for hung. Then the
   * subscription: the link is up with the agent's snapshot applied. 'blocked' when the agent speaks another protocol
   * and is not replaced: only someone replacing it can help.
   */
  private async handshake(link: LinkPeer): Promise<'up' | 'failed' | 'blocked'> {
    const { peer } = link;
    try {
      const wait = this.liveness.helloTimeout(this.opts.setupTimeoutMs ?? SETUP_TIMEOUT_MS);
      const { hello, info, build } = await greet(peer, this.socket, wait);
      if (await this.replaced(peer, this.starts.outdatedReason(info, build))) return 'failed';
      this.emit('peer', peer);
      const snapshot = await peer.request('ports.subscribe', {});
      this.markUp(info, build);
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
      link.ports.applySnapshot(snapshot);
      this.sockets.resume(peer);
      return 'up';
    } catch (err) {
      return this.setupFailed(peer, err as Error, link.closeError());
    }
  }

  private markUp(info: Info, build: string | null): void {
    this.info = info;
    this.build = build;
    this.up = true;
    this.starts.cancelHeldBack();
    this.liveness.forget();
    this.status.up();
    this.shutdown.clear();
  }

  /** A link whose setup failed: an agent of another protocol is replaced or blocks the link, a silent one is hung. */
  private async setupFailed(peer: Peer, err: Error, closeError: Error | undefined): Promise<'failed' | 'blocked'> {
    const message = `agent link setup failed: ${err.message}`;
    const versionError = closeError instanceof ProtocolVersionError ? closeError : null;
    // The same agent that blocks the link, met again at a retry: said once already.
    if (versionError === null || versionError.message !== this.status.incompatible) this.status.failed(message);
    peer.close(message);
    if (this.peer === peer) this.peer = null;
    if (versionError) {
      if (await this.replaced(peer, versionError.message)) return 'failed';
      // Kept (provisioning is off, or it was replaced already on this connection): no retry can talk to it.
      this.status.incompatible = versionError.message;
      this.noteBlocked(`${versionError.message}: this host's tether cannot use that guest agent until it is replaced`);
      return 'blocked';
    }
    // The socket takes connections but nothing answers on it: a hung or stopped agent, to be replaced.
    if (err instanceof HelloTimeoutError || err instanceof RequestTimeoutError)
      await this.starts.replaceHung(err.message);
    return 'failed';
  }

  /**
   * Replaces an agent that is not this host's build, when agent-starts.ts lets it; true when it did (the link then
   * starts over with the new agent).
   */
  private async replaced(peer: Peer, reason: string | null): Promise<boolean> {
    if (!this.starts.mayReplace(reason)) return false;
    peer.close(`replacing the guest agent: ${reason}`);
    if (this.peer === peer) this.peer = null;
    await this.starts.replaceOutdated(reason);
    return true;
  }

  /** Pings the agent while the link is up; once it closes, the link is down with the reason. */
  private async serveUntilClosed({ peer, closed }: GuestPeer): Promise<void> {
    const stopPinging = this.liveness.watch(peer);
    const reason = await closed;
    stopPinging();
    if (this.peer === peer) this.peer = null;
    this.up = false;
    this.info = null;
    this.emit('socket-watch', false);
    const why = this.status.down(reason);
    this.emit('down', why);
  }

  private noteBlocked(message: string): void {
    this.starts.cancelHeldBack();
    if (this.status.block(message)) this.emit('blocked', message);
  }
}
