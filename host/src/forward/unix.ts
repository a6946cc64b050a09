// A unix socket forward: a host socket file (mode 0600) whose connections each open a streamlocal channel to a
// guest socket (e.g. /var/run/docker.sock). A stale socket file (nothing answers on it) is replaced at start and the
// file is removed at stop (libuv unlinks it when the server closes); a socket another program serves (Docker
// Desktop's, a second tether) and any other kind of file at that path are left alone and reported.
import { chmodSync, lstatSync, mkdirSync, type Stats, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import type { SshSession } from '../ssh/index.js';
import { type GuestTarget, type HostBinding, listenServer, stopServer } from './binding.js';
import { bridge } from './bridge.js';

export class UnixBinding implements HostBinding {
  private server: net.Server | null = null;

  constructor(
    readonly address: string,
    private readonly guestSocket: string,
    private readonly forward: Pick<GuestTarget, 'stats' | 'opened'>,
    private readonly deps: { ssh: SshSession; log: Logger },
  ) {}

  async listen(): Promise<void> {
    const path = this.address;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    await removeStaleSocket(path);
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
    this.server = server;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    stopServer(this.server);
    this.server = null;
  }
}

/** Removes a socket file nothing answers on; refuses (EADDRINUSE) one that a program serves, and any other file. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await answers(path)) {
    const err: NodeJS.ErrnoException = new Error(`another program serves ${path}`);
    err.code = 'EADDRINUSE';
    throw err;
  }
  unlinkSync(path);
}

/** A connect to the socket succeeds (a refused or timed-out connect means the file is stale). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (yes: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(yes);
    };
    const timer = setTimeout(() => done(true), 1_000); // a full backlog still means someone listens
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
