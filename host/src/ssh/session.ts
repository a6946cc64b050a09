// One SSH connection to a VM (ssh2 Client) kept alive for the agent's lifetime: key auth, keepalive, host key
// pinning, reconnect with capped exponential backoff and jitter, and explicit states. Owns the Client and the promise
// helpers that open channels on it; it does not know what the channels are for. Per-connection users listen for
// `connected` (a new Client each time) and rebuild their objects.
// First: ssh2 must see the pooled random fill when it loads.
import './random-pool.js';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import {
  type CipherAlgorithm,
  Client,
  type ClientChannel,
  type ConnectConfig,
  type ExecOptions,
  type SFTPWrapper,
} from 'ssh2';
import { formatAddr } from '../address.js';
import type { SshConfig } from '../config/schema.js';
import { firstOutcome } from '../first-outcome.js';
import { instanceFiles } from '../instance.js';
import type { Logger } from '../log.js';
import type { ConnectionState } from '../model.js';
import { BannerWatch } from './banner.js';
import { coalescingSocket } from './coalesce.js';
import { type ChannelSink, type DirectChannel, type DirectTarget, openDirectChannel } from './direct-channel.js';
import { type ExecChannel, type ExecResult, execText, startExec } from './exec.js';
import { watchGoingAway } from './going-away.js';
import { checkHostKey, describeKey, type HostKey } from './hostkey.js';
import { credentials } from './identity.js';
import { openSession } from './session-limit.js';
import { commandLabel } from './shell-quote.js';
import { sshTarget } from './target.js';

/** aes128-gcm first: the fastest measured here; the rest are OpenSSH's usual modern set. */
const CIPHERS: CipherAlgorithm[] = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
];

/** How long a connection may take to get through the SSH handshake (ssh2's readyTimeout). */
const READY_TIMEOUT_MS = 20_000;

export interface SshSessionOptions {
  ssh: SshConfig;
  /** Holds the pinned host key (`<instanceDir>/host_key`). */
  instanceDir: string;
  /** Component logger (`ssh`). */
  logger: Logger;
  readyTimeoutMs?: number;
  /** Where the default key files are looked for (`~/.ssh`) when ssh.identityFile is unset; default the user's home. */
  home?: string;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Told the size of every chunk the SSH socket reads or writes (the buffer collector's pace). */
  onTraffic?: (bytes: number) => void;
}

/**
 * The tick to give ssh2 for a link declared dead `intervalS × countMax` seconds after its last answer at the latest,
 * as the settings read (and as OpenSSH documents its own): ssh2 pings every tick, restarts the tick on each answer,
 * and gives up on the tick after countMax unanswered ones, (countMax + 1) ticks after the last answer.
 */
export function keepaliveTickMs(intervalS: number, countMax: number): number {
  return Math.round((intervalS * 1000 * countMax) / (countMax + 1));
}

export class SshNotConnectedError extends Error {
  override name = 'SshNotConnectedError';
}

/** RFC 4254 §5.1 SSH_OPEN_ADMINISTRATIVELY_PROHIBITED: OpenSSH's answer when its configuration forbids a channel. */
export const OPEN_ADMINISTRATIVELY_PROHIBITED = 1;
/** RFC 4254 §5.1 SSH_OPEN_CONNECT_FAILED: sshd's connect to the target failed (for TCP: nothing listens there). */
export const OPEN_CONNECT_FAILED = 2;

/** The server refused a channel; `reason` is its RFC 4254 code when it gave one (ssh2 puts it on its error). */
export class ChannelOpenError extends Error {
  override name = 'ChannelOpenError';
  readonly reason: number | undefined;

  constructor(message: string, cause: Error) {
    super(message);
    const reason = (cause as { reason?: unknown }).reason;
    this.reason = typeof reason === 'number' ? reason : undefined;
  }
}

/**
 * Events: `state` (state: ConnectionState, reason: string | null), `connected` (client: Client) on every successful
 * (re)connect, `disconnected` (reason: string), `reachable` (key: HostKey) when a server answered the handshake,
 * `retrying` (reason: string, delayMs: number) after each failed attempt.
 */
export class SshSession extends EventEmitter {
  state: ConnectionState = 'connecting';
  since = new Date();
  lastError: string | null = null;
  /** Successful connects after the first. */
  reconnects = 0;
  hostKey: HostKey | null = null;
  /** `pinned` (first use), `match`, or `mismatch` once a key was offered. */
  hostKeyResult: 'pinned' | 'match' | 'mismatch' | null = null;
  /** Since when (performance.now()) every attempt has ended in the guest refusing the login; null otherwise. */
  loginRefusedSince: number | null = null;
  client: Client | null = null;

  private readonly log: Logger;
  private readonly hostKeyPath: string;
  private started = false;
  private stopped = false;
  private refused = false;
  /** close() was called: nothing reconnects, not even a fix made while refused. */
  private closedForGood = false;
  private everConnected = false;
  private attempt = 0;
  /** The failed attempts logged last: their reason, when, and how many failed alike since without a line. */
  private quietAttempts: { reason: string; since: number; count: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Starts watching the current connection as one whose guest shuts down (see guestGoingAway); null while none. */
  private watchCurrent: (() => void) | null = null;
  private readonly inflight = new Set<(err: Error) => void>();

  constructor(private readonly opts: SshSessionOptions) {
    super();
    this.log = opts.logger;
    this.hostKeyPath = instanceFiles(opts.instanceDir).hostKey;
  }

  get target(): string {
    return sshTarget(this.opts.ssh);
  }

  get connected(): boolean {
    return this.state === 'connected' && this.client !== null;
  }

  /**
   * The guest said it shuts down: the connection is given up on within seconds of its sshd going quiet, instead of
   * after the keepalive's full time (going-away.ts), so a guest that reboots is reconnected to as soon as it is back.
   */
  guestGoingAway(): void {
    this.watchCurrent?.();
  }

  /** Starts connecting; keeps reconnecting until close() or a refusal (host key, credentials). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.log.info({ state: this.state, target: this.target }, `ssh connecting to ${this.target}`);
    this.emit('state', this.state, null);
    this.connect();
  }

  /** Resolves with the client once connected; rejects when the session closes or the timeout passes. */
  waitConnected(timeoutMs = 30_000): Promise<Client> {
    if (this.connected) return Promise.resolve(this.client!);
    const closed = () => new Error(this.lastError ?? 'ssh session closed');
    if (this.state === 'closed') return Promise.reject(closed());
    const deadline = {
      ms: timeoutMs,
      error: () =>
        new Error(`ssh ${this.target} not connected after ${timeoutMs} ms: ${this.lastError ?? `state ${this.state}`}`),
    };
    return firstOutcome<Client>(({ done, fail }) => {
      const onState = (state: ConnectionState) => {
        if (state === 'connected') done(this.client!);
        else if (state === 'closed') fail(closed());
      };
      this.on('state', onState);
      return () => this.off('state', onState);
    }, deadline);
  }

  /** A forwarding channel without ssh2's streams (see direct-channel.ts), for forwarded connections. */
  openDirect(target: DirectTarget, sink: ChannelSink): Promise<DirectChannel> {
    const to = target.kind === 'tcp' ? formatAddr(target.dstIP, target.dstPort) : target.socketPath;
    return this.open(`open a channel to ${to}`, (c, cb) =>
      openDirectChannel(c, target, sink, cb as (err: Error | undefined, ch?: DirectChannel) => void),
    );
  }

  openStreamLocal(socketPath: string): Promise<ClientChannel> {
    return this.open(`open guest socket ${socketPath}`, (c, cb) => c.openssh_forwardOutStreamLocal(socketPath, cb));
  }

  /** Opens an exec channel running `command` (see startExec); `label` names it in errors. */
  exec(command: string, options: ExecOptions = {}, label = commandLabel(command)): Promise<ExecChannel> {
    return openSession(() =>
      this.open<ExecChannel>(`run ${JSON.stringify(label)} in the guest`, (c, cb) =>
        startExec(c, command, options, cb),
      ),
    );
  }

  sftp(): Promise<SFTPWrapper> {
    return openSession(() => this.open('open sftp', (c, cb) => c.sftp(cb)));
  }

  /** Runs a command to completion, collecting its output (see execText). */
  execText(command: string, timeoutMs = 30_000): Promise<ExecResult> {
    return execText((marked) => this.exec(marked, {}, commandLabel(command)), command, timeoutMs);
  }

  /** Ends the connection for good. */
  async close(reason: string): Promise<void> {
    // A refused session is stopped too, but still watches for the user's fix: that ends here as well.
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.closedForGood) return;
    this.closedForGood = true;
    if (this.stopped) {
      this.setState('closed', reason);
      return;
    }
    this.stopped = true;
    const client = this.client;
    if (client) {
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      client.end();
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, 2_000).unref());
      await Promise.race([closed, timeout]);
      client.destroy();
    }
    this.failInflight(reason);
    this.client = null;
    this.setState('closed', reason);
  }

  private open<T>(what: string, start: (c: Client, cb: (err: Error | undefined, v: T) => void) => void): Promise<T> {
    const client = this.client;
    if (!client || this.state !== 'connected') {
      const why = this.lastError ? ` (last error: ${this.lastError})` : '';
      return Promise.reject(new SshNotConnectedError(`cannot ${what}: ssh ${this.target} is ${this.state}${why}`));
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        this.inflight.delete(fail);
        reject(err);
      };
      this.inflight.add(fail);
      try {
        start(client, (err, value) => {
          if (err) return fail(new ChannelOpenError(`cannot ${what}: ${err.message}`, err));
          if (settled) {
            // The connection dropped while the open was in flight; nobody is waiting for this channel.
            const late = value as { destroy?: () => void; close?: () => void } | undefined;
            if (late?.destroy) late.destroy();
            else late?.close?.();
            return;
          }
          settled = true;
          this.inflight.delete(fail);
          resolve(value);
        });
      } catch (err) {
        // ssh2 throws synchronously when the socket is no longer writable.
        fail(new SshNotConnectedError(`cannot ${what}: ${(err as Error).message}`));
      }
    });
  }

  private failInflight(reason: string): void {
    const err = new SshNotConnectedError(`ssh connection lost: ${reason}`);
    for (const fail of [...this.inflight]) fail(err);
  }

  private setState(state: ConnectionState, reason: string | null): void {
    if (state === this.state && state !== 'connected') return;
    this.state = state;
    this.since = new Date();
    const fields = { state, reason, target: this.target };
    if (state === 'closed' && this.refused) this.log.error(fields, `ssh ${state}: ${reason}`);
    else if (state === 'reconnecting') this.log.warn(fields, `ssh ${state}: ${reason}`);
    else this.log.info(fields, `ssh ${state}${reason ? `: ${reason}` : ''}`);
    this.emit('state', state, reason);
  }

  private connect(): void {
    if (this.stopped) return;
    this.timer = null;
    const { ssh } = this.opts;
    const creds = credentials(ssh, this.opts.home);
    if ('error' in creds) {
      this.refuse(creds.error);
      return;
    }
    const client = new Client();
    let lastClientError: string | null = null;
    const sock = coalescingSocket(ssh.host, ssh.port, this.opts.onTraffic);
    // A server that takes the connection and says nothing (a VM whose sshd hangs, something else on the port) or ends
    // it at once: ssh2's own words hide that nothing was ever said.
    const banner = new BannerWatch(sock, this.target, this.opts.readyTimeoutMs ?? READY_TIMEOUT_MS);
    const config: ConnectConfig = {
      host: ssh.host,
      port: ssh.port,
      sock,
      username: ssh.user,
      ...creds,
      keepaliveInterval: keepaliveTickMs(ssh.keepaliveInterval, ssh.keepaliveCountMax),
      keepaliveCountMax: ssh.keepaliveCountMax,
      readyTimeout: this.opts.readyTimeoutMs ?? READY_TIMEOUT_MS,
      algorithms: { cipher: CIPHERS },
      // Block body on purpose: a returned truthy value would accept the key before the check ran.
      hostVerifier: (blob: Buffer, verify: (ok: boolean) => void): void => {
        verify(this.verifyHostKey(blob));
      },
    };
    client.on('ready', () => {
      if (this.stopped) {
        client.end();
        return;
      }
      this.client = client;
      this.attempt = 0;
      this.quietAttempts = null;
      this.lastError = null;
      this.loginRefusedSince = null;
      if (this.everConnected) this.reconnects++;
      this.everConnected = true;
      let watching = false;
      this.watchCurrent = () => {
        if (watching) return;
        watching = true;
        watchGoingAway(client, {
          current: () => this.client === client,
          target: this.target,
          lost: (reason) => {
            this.log.info({ target: this.target }, reason);
            lastClientError = reason;
            this.lastError = reason;
            sock.destroy();
          },
        });
      };
      this.setState('connected', null);
      this.emit('connected', client);
    });
    client.on('error', (err: Error & { level?: string }) => {
      // ssh2 says only "All configured authentication methods failed": name who logged in with what.
      const refusedLogin = err.level === 'client-authentication';
      lastClientError = refusedLogin ? `${this.loginRefused()}: ${err.message}` : err.message;
      lastClientError = banner.explain(err) ?? lastClientError;
      const timedOut = err.level === 'client-timeout' && /keepalive/i.test(err.message);
      if (timedOut) lastClientError = this.keepaliveTimeout();
      // A typo in the port looks like a VM that is still booting: say which it may be.
      if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED')
        lastClientError += ` (nothing listens there: is the VM running, and is ${this.opts.ssh.port} the port it forwards to its sshd?)`;
      this.loginRefusedSince = refusedLogin ? (this.loginRefusedSince ?? performance.now()) : null;
      // A refused host key already says precisely why; ssh2's "Host denied" would hide the fingerprints.
      if (!this.refused)
        this.lastError = err.level && !timedOut ? `${lastClientError} (${err.level})` : lastClientError;
    });
    client.on('close', () => {
      const wasCurrent = this.client === client;
      if (wasCurrent) {
        this.client = null;
        this.watchCurrent = null;
      }
      const reason = this.refused
        ? (this.lastError ?? 'host key refused')
        : (lastClientError ?? (wasCurrent ? 'connection closed by the server' : 'connection closed'));
      this.failInflight(reason);
      if (wasCurrent) this.emit('disconnected', reason);
      if (this.stopped) return;
      if (this.refused) {
        this.refuse(reason);
        return;
      }
      this.scheduleReconnect(reason);
    });
    try {
      client.connect(config);
    } catch (err) {
      // ssh2 threw before it took the socket over: nothing else listens for its errors or closes it.
      sock.destroy();
      this.lastError = `cannot connect to ${this.target}: ${(err as Error).message}`;
      this.scheduleReconnect(this.lastError);
    }
  }

  /** Why the link was given up on after unanswered keepalives, in the terms of the settings that decide it. */
  private keepaliveTimeout(): string {
    const { keepaliveInterval, keepaliveCountMax } = this.opts.ssh;
    return `keepalive timeout: ${this.target} answered nothing for ${keepaliveInterval * keepaliveCountMax} s (ssh.keepaliveInterval × keepaliveCountMax): the VM is paused, asleep or unreachable`;
  }

  /** "login as USER refused (identity file KEY)", for authentication failures. */
  private loginRefused(): string {
    const { user, identityFile } = this.opts.ssh;
    return `login as ${user} refused (${identityFile ? `ssh.identityFile ${identityFile}` : 'no ssh.identityFile set'})`;
  }

  /**
   * Stops trying: what is wrong (credentials, a changed host key) needs the user, not another attempt. It then watches
   * for the user's fix (see watchForFix) and connects again by itself once it is made.
   */
  private refuse(reason: string): void {
    this.lastError = reason;
    this.refused = true;
    this.stopped = true;
    this.setState('closed', reason);
    this.watchForFix();
  }

  /**
   * While refused, looks every REFUSED_RECHECK_MS for what the error told the user to change: the pinned host key
   * deleted or replaced, or credentials that load again (an identity file back on a volume mounted late). Nothing is
   * sent to the server meanwhile.
   */
  private watchForFix(): void {
    const pinned = fileText(this.hostKeyPath);
    const credsFailed = 'error' in credentials(this.opts.ssh, this.opts.home);
    const check = () => {
      this.timer = null;
      if (this.closedForGood) return;
      const pinChanged = fileText(this.hostKeyPath) !== pinned;
      const credsBack = credsFailed && !('error' in credentials(this.opts.ssh, this.opts.home));
      if (!pinChanged && !credsBack) {
        this.timer = setTimeout(check, REFUSED_RECHECK_MS).unref();
        return;
      }
      const what = pinChanged ? `the pinned host key ${this.hostKeyPath} changed` : 'the credentials load again';
      this.log.info({ target: this.target }, `ssh: ${what}; connecting again`);
      this.refused = false;
      this.stopped = false;
      this.attempt = 0;
      this.setState(this.everConnected ? 'reconnecting' : 'connecting', what);
      this.connect();
    };
    this.timer = setTimeout(check, REFUSED_RECHECK_MS).unref();
  }

  private verifyHostKey(blob: Buffer): boolean {
    try {
      const check = checkHostKey(this.hostKeyPath, blob);
      this.hostKey = check.key;
      this.hostKeyResult = check.result;
      this.emit('reachable', check.key);
      if (check.result === 'mismatch') {
        this.refused = true;
        this.lastError = check.error.message;
        return false;
      }
      if (check.result === 'pinned') {
        this.log.info(
          { fingerprint: check.key.fingerprint, algorithm: check.key.algorithm, path: this.hostKeyPath },
          `pinned host key ${check.key.algorithm} ${check.key.fingerprint} of ${this.target} (first use)`,
        );
      }
      return true;
    } catch (err) {
      // The guest answered the handshake; it is its key that cannot be checked (a pin that cannot be read).
      try {
        this.hostKey = describeKey(blob);
        this.hostKeyResult = 'mismatch';
        this.emit('reachable', this.hostKey);
      } catch {
        // A key blob ssh2 accepted but that cannot be described: the handshake's failure says why.
      }
      this.refused = true;
      this.lastError = (err as Error).message;
      return false;
    }
  }

  private logAttempt(reason: string, delayMs: number): void {
    const quiet = this.quietAttempts;
    const now = performance.now();
    if (quiet?.reason === reason && now - quiet.since < REPEATED_ATTEMPT_LOG_MS) {
      quiet.count++;
      return;
    }
    const again =
      quiet?.reason === reason && quiet.count > 0 ? ` (${quiet.count} more attempts failed alike since)` : '';
    this.log.info(
      { reason, delayMs, attempt: this.attempt },
      `ssh attempt failed: ${reason}; retry in ${delayMs} ms${again}`,
    );
    this.quietAttempts = { reason, since: now, count: 0 };
  }

  private scheduleReconnect(reason: string): void {
    if (this.stopped) return;
    const initial = this.opts.backoffInitialMs ?? 250;
    // Attempts are cheap (often a loopback port that QEMU answers), and a VM that comes back should not wait long.
    const max = this.opts.backoffMaxMs ?? 2_000;
    const base = Math.min(max, initial * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt++;
    const next = this.everConnected ? 'reconnecting' : 'connecting';
    // The transition is logged by setState; later failed attempts here, each new reason at once and the same one
    // again only as a count once a minute: a VM shut down for a weekend must not rotate the log's history away.
    if (next === this.state) this.logAttempt(reason, delay);
    this.setState(next, reason);
    this.emit('retrying', reason, delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** How often a failed attempt with the reason of the last one logged is logged again (with the count since). */
const REPEATED_ATTEMPT_LOG_MS = 60_000;

/** How often a refused session looks for the user's fix. */
const REFUSED_RECHECK_MS = 2_000;

/** A small file's text, or '' when it cannot be read (the pinned host key, deleted to accept a new one). */
function fileText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
