// A host TCP listener for one host address: each accepted connection gets its own direct-tcpip channel to the guest
// address the engine's route picks (source address = the host client's), opened through a shared queue so a burst
// of thousands of connections does not open thousands of channels at once. The open starts as the connection is
// accepted, before Node builds its Socket (accept-early.ts).
import net from 'node:net';
import { formatAddr } from '../address.js';
import type { Logger } from '../log.js';
import { SshNotConnectedError, type SshSession } from '../ssh/index.js';
import { acceptEarly, type ClientAddr } from './accept-early.js';
import { type HostBinding, listenServer, type OpenChannel, type Route, stopServer } from './binding.js';
import { openBridge, type PendingBridge } from './bridge.js';
import { handleEnd, handleEnds, isTcpHandle, socketEnd } from './client-end.js';
import type { OpenGate } from './open-gate.js';

interface TcpBindingDeps {
  ssh: SshSession;
  /** Bounds concurrent channel opens across all forwards. */
  opens: OpenGate;
  log: Logger;
}

export class TcpBinding implements HostBinding {
  readonly address: string;
  private server: net.Server | null = null;
  private readonly family: 4 | 6;
  /** The bridge opened for a socket before Node built it (see accept-early.ts). */
  private claim: (socket: net.Socket) => PendingBridge | undefined = () => undefined;

  constructor(
    private readonly hostIP: string,
    private readonly hostPort: number,
    private readonly route: Route,
    private readonly deps: TcpBindingDeps,
  ) {
    this.address = formatAddr(hostIP, hostPort);
    this.family = net.isIPv6(hostIP) ? 6 : 4;
  }

  async listen(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) =>
      this.onConnection(s),
    );
    // ipv6Only: `::` must not also claim the IPv4 wildcard another binding may own. A deep backlog (the kernel caps
    // it at somaxconn): with Node's 511, a burst of thousands of connects overflows the accept queue while the
    // event loop is busy with SSH, and clients see resets.
    const opts = {
      host: this.hostIP,
      port: this.hostPort,
      ipv6Only: this.family === 6,
      exclusive: true,
      backlog: 4096,
    };
    await listenServer(server, opts, this.address, this.deps.log);
    this.server = server;
    this.claim = acceptEarly(
      server,
      (peer) => this.open(peer) ?? undefined,
      (pending) => pending.cancel(),
      // The connection is driven through its handle, without a net.Socket (client-end.ts).
      handleEnds
        ? (client, pending) => {
            if (!isTcpHandle(client)) return false;
            pending.connect(handleEnd(client));
            return true;
          }
        : undefined,
    );
  }

  async close(): Promise<void> {
    if (this.server) stopServer(this.server);
    this.server = null;
  }

  private onConnection(socket: net.Socket): void {
    const pending =
      this.claim(socket) ?? this.open({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 });
    if (pending) pending.connect(socketEnd(socket));
    else socket.destroy();
  }

  /** Starts the channel open for a client at `peer`; null when the binding routes nowhere any more. */
  private open(peer: ClientAddr): PendingBridge | null {
    const target = this.route(this.family);
    if (!target) return null;
    const srcIP = peer.address || (this.family === 6 ? '::1' : '127.0.0.1');
    const channel = {
      kind: 'tcp',
      srcIP,
      srcPort: peer.port,
      dstIP: target.guestIP,
      dstPort: target.guestPort,
    } as const;
    const { ssh } = this.deps;
    const open: OpenChannel = (sink, started) =>
      this.deps.opens.run(target.id, () => {
        const first = ssh.openDirect(channel, sink);
        // After the open is queued, so its packet goes out before the client socket starts reading (a syscall).
        started();
        const { fallbackIP } = target;
        if (!fallbackIP) return first;
        return first.catch((err: Error) => {
          if (err instanceof SshNotConnectedError) throw err;
          return ssh.openDirect({ ...channel, dstIP: fallbackIP }, sink).catch((second: Error) => {
            // Both addresses, the forward's own first: the fallback's alone would name an address nobody asked for.
            second.message = `${err.message}; then ${second.message}`;
            throw second;
          });
        });
      });
    const { address } = this;
    return openBridge(open, {
      // Only log lines read it; most connections never build it.
      get label() {
        return `${address} → guest ${formatAddr(target.guestIP, target.guestPort)}`;
      },
      stats: target.stats,
      log: this.deps.log,
      opened: target.opened,
    });
  }
}
