// A unix socket forward: a host socket file (mode 0600) whose connections each open a streamlocal channel to a
// guest socket (e.g. /var/run/docker.sock). A stale socket file (nothing answers on it) is replaced at start and the
// file is removed at stop (libuv unlinks it when the server closes); a socket another program serves (Docker
// Desktop's, a second tether) and any other kind of file at that path are left alone and reported. Directories made
// for the socket file go with it, if nothing else was put in them. While the guest socket's service is down, or SSH
// is, the host socket is closed too (`accepting(false)`): a client then fails to connect, as it would to the stopped
// service itself (docker: "Cannot connect to the Docker daemon … Is the docker daemon running?"), instead of
// connecting and reading an immediate EOF.
import { chmodSync, rmdirSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { makeDirs } from '../make-dirs.js';
import { claimSocketPath, socketPathProblem } from '../socket-file.js';
import type { SshSession } from '../ssh/index.js';
import { type GuestTarget, type HostBinding, listenServer, stopServer } from './binding.js';
import { bridge } from './bridge.js';

export class UnixBinding implements HostBinding {
  private server: net.Server | null = null;
  /** Directories listen() made for the socket file, outermost first. */
  private madeDirs: string[] = [];
  private closed = false;
  /** Whether clients should find the socket: false while nothing could serve them (see the top comment). */
  private wanted = true;
  /** Opening or closing the server, in order: `accepting` may flip while a listen is under way. */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    readonly address: string,
    private readonly guestSocket: string,
    private readonly forward: Pick<GuestTarget, 'stats' | 'opened'>,
    private readonly deps: { ssh: SshSession; log: Logger },
  ) {}

  async listen(): Promise<void> {
    const path = this.address;
    // Before the directory is made: a path that cannot be a socket leaves nothing behind.
    if (socketPathProblem(path)) {
      throw new Error(`the path is too long for a unix socket (${Buffer.byteLength(path)} bytes; pick a shorter one)`);
    }
    this.madeDirs.push(...makeDirs(dirname(path), 0o700));
    await this.open();
  }

  /**
   * Opens or closes the host socket as its guest service (or SSH) comes back or goes down. A socket that cannot be opened
   * again (another program took the path meanwhile) is logged with the path, and the next word that the service
   * listens (a look, the guest agent's watch) tries again.
   */
  accepting(on: boolean): Promise<void> {
    if (on === this.wanted) return this.turn;
    this.wanted = on;
    this.turn = this.turn.then(async () => {
      if (this.wanted === !!this.server || this.closed) return;
      if (!this.wanted) {
        this.stop('its guest service is down');
        return;
      }
      await this.open().then(
        () => this.deps.log.info({ hostSocket: this.address }, `host socket ${this.address} accepts again`),
        (err: Error) => {
          this.wanted = false;
          this.deps.log.error(
            { err: err.message, hostSocket: this.address },
            `cannot listen on ${this.address} again: ${err.message}`,
          );
        },
      );
    });
    return this.turn;
  }

  private async open(): Promise<void> {
    const path = this.address;
    await claimSocketPath(path);
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      bridge(
        socket,
        (sink, started) => {
          started();
          return this.deps.ssh.openDirect({ kind: 'unix', socketPath: this.guestSocket }, sink);
        },
        {
          label: `${path} → guest ${this.guestSocket}`,
          stats: this.forward.stats,
          log: this.deps.log,
          opened: this.forward.opened,
        },
      ),
    );
    await listenServer(server, { path, exclusive: true }, path, this.deps.log);
    try {
      chmodSync(path, 0o600);
    } catch (err) {
      stopServer(server);
      throw err;
    }
    // Closed for good while this listen was under way (a forward removed as its service came back).
    if (this.closed) stopServer(server);
    else this.server = server;
  }

  private stop(why: string): void {
    if (!this.server) return;
    stopServer(this.server); // libuv unlinks the socket file as it closes
    this.server = null;
    this.deps.log.info({ hostSocket: this.address }, `host socket ${this.address} closed while ${why}`);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.server) stopServer(this.server); // libuv unlinks the socket file as it closes
    this.server = null;
    for (const dir of this.madeDirs.reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        break; // not empty (something else lives there now), or gone: the ones above it stay too
      }
    }
    this.madeDirs = [];
  }
}
