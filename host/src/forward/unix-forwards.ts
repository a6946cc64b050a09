// Unix socket forwards (a guest socket such as /var/run/docker.sock to a host socket file): their ids, their host
// socket files (each serves one guest socket, and none is one of the instance's own files), the look at each guest
// socket (socket-look.ts) and the guest agent's watch of their paths, and the host socket closed while nothing could
// serve a client.
import { basename, join } from 'node:path';
import { expandHome } from '../config/paths.js';
import type { SocketRule } from '../config/schema.js';
import { ownFileAt } from '../instance.js';
import type { Logger } from '../log.js';
import type { ForwardSource } from '../model.js';
import type { SshSession } from '../ssh/index.js';
import { DuplicateForwardError, ForwardRefusedError } from './errors.js';
import type { Forward } from './forward.js';
import { bindingKey, type HostBindings } from './host-bindings.js';
import { unixId } from './ids.js';
import type { ForwardLifecycle } from './lifecycle.js';
import { SocketLook } from './socket-look.js';
import type { ForwardTable } from './table.js';
import { UnixBinding } from './unix.js';
import type { ForwardViews } from './views.js';

interface UnixDeps {
  ssh: SshSession;
  log: Logger;
  /** The instance's directory: the default place of host sockets, and the files none may be. */
  instanceDir: string;
  /** The instance's name, for messages. */
  instance: string;
  table: Pick<ForwardTable, 'get' | 'add' | 'values'>;
  bindings: Pick<HostBindings<Forward>, 'refs' | 'of'>;
  lifecycle: Pick<ForwardLifecycle, 'make' | 'acquire'>;
  views: Pick<ForwardViews, 'refresh'>;
  /** The forward shows `reason` as why its channels fail (null: they open). */
  show: (f: Forward, reason: Forward['refused']) => void;
  /** Whether an earlier rule already made forward `id`: said, and the rule at `index` skipped. */
  repeats: (index: number, id: string) => boolean;
  /** The guest socket paths of the unix forwards, whenever they change (AgentLink.watchSockets). */
  watchSockets?: (paths: string[]) => void;
}

export class UnixForwards {
  /** Whether the guest agent watches the unix forwards' socket paths (it says when one changes). */
  private watched = false;
  /** The paths last handed to watchSockets. */
  private watchedPaths = '';

  constructor(private readonly deps: UnixDeps) {}

  /** Sets up the socket rule at `index` of portForwards, unless it repeats an earlier one or names no usable path. */
  fromRule(rule: SocketRule, index: number): Promise<void> {
    const hostSocket = expandHome(rule.hostSocket ?? join(this.deps.instanceDir, basename(rule.guestSocket)));
    const id = this.idFor(rule.guestSocket, hostSocket);
    if (this.deps.repeats(index, id)) return Promise.resolve();
    const own = this.ownHostSocket(hostSocket);
    if (own) {
      this.deps.log.error({ rule: index, hostSocket }, `portForwards[${index}]: ${own}; skipped`);
      return Promise.resolve();
    }
    return this.create(id, 'static', rule.guestSocket, hostSocket);
  }

  /**
   * The id of a forward of `guestSocket` to `hostSocket`: the plain one, or one qualified with the host path when
   * another forward of the same guest socket has the plain one (docker.sock in two places).
   */
  idFor(guestSocket: string, hostSocket: string): string {
    const plain = this.deps.table.get(unixId(guestSocket));
    return plain && plain.hostAddrs[0] !== hostSocket ? unixId(guestSocket, hostSocket) : unixId(guestSocket);
  }

  /** Refuses a host socket that is one of the instance's own files. */
  refuseOwn(hostSocket: string): void {
    const own = this.ownHostSocket(hostSocket);
    if (own) throw new ForwardRefusedError(own);
  }

  /** Refuses a host socket that serves another forward (`asGiven`: the path as the operator wrote it). */
  refuseShared(hostSocket: string, asGiven: string): void {
    const holder = this.holder(hostSocket);
    if (holder) throw new DuplicateForwardError(this.deps.instance, holder.id, holder.source, `host socket ${asGiven}`);
  }

  async create(id: string, source: ForwardSource, guestSocket: string, hostSocket: string): Promise<void> {
    const { ssh, log, lifecycle, views } = this.deps;
    const f = lifecycle.make({ id, proto: 'unix', source, guestAddr: guestSocket, guestIP: '', guestPort: 0 });
    const look = new SocketLook(f, {
      ssh,
      log,
      show: (reason) => this.deps.show(f, reason),
      watched: () => this.watched,
    });
    f.look = look;
    f.hostAddrs = [hostSocket];
    this.deps.table.add(f);
    this.watchSockets();
    // One host socket file serves one guest socket: a second forward there would send its clients to the first's.
    const holder = this.holder(hostSocket);
    if (holder) {
      f.refused = {
        cause: 'host-socket-taken',
        text:
          `host socket ${hostSocket} already serves forward ${holder.id}; give this one its own hostSocket ` +
          '(the default is <instance dir>/<basename of guestSocket>)',
      };
      log.error({ forward: id, hostSocket }, `forward ${id} not set up: ${f.refused.text}`);
      views.refresh(f);
      return;
    }
    await lifecycle.acquire(
      f,
      bindingKey('unix', hostSocket),
      () => new UnixBinding(hostSocket, guestSocket, f, { ssh, log }),
    );
    await look.settle();
    views.refresh(f);
  }

  /**
   * A unix forward's host socket is closed while nothing could serve a client: its guest service is down, or SSH is
   * (see unix.ts). Open otherwise.
   */
  followService(f: Forward): void {
    const closed = f.suspended !== null || f.refused?.cause === 'service-down';
    for (const e of this.deps.bindings.of(f.bindingKeys)) {
      if (e.status === 'bound' && e.binding instanceof UnixBinding) void e.binding.accepting(!closed);
    }
  }

  /**
   * Whether the guest agent watches the unix forwards' socket paths now. From when it does, a forward showing a cause
   * waits for its word instead of looking on a timer, after one look now (the socket may have changed unwatched);
   * from when it stops, such a forward looks on its timer again.
   */
  setWatch(on: boolean): void {
    if (on === this.watched) return;
    this.watched = on;
    for (const f of this.deps.table.values()) {
      if (!f.look || !f.refused) continue;
      if (on) f.look.changed();
      else f.look.unwatched();
    }
  }

  /** The guest agent saw a watched socket path change: its forwards look at it now. */
  changed(path: string): void {
    for (const f of this.deps.table.values()) if (f.look && f.guestAddr === path) f.look.changed();
  }

  /** A unix forward went: no more looks at its guest socket, nor a watch of it for this forward. */
  dropped(f: Forward): void {
    f.look?.stop();
    this.watchSockets();
  }

  /** The engine stops: no forward looks any more. */
  stop(): void {
    for (const f of this.deps.table.values()) f.look?.stop();
  }

  /** Hands the unix forwards' guest socket paths to the guest agent's watch when they changed. */
  private watchSockets(): void {
    const forwards = [...this.deps.table.values()];
    const paths = [...new Set(forwards.filter((f) => f.look).map((f) => f.guestAddr))].sort();
    const key = paths.join('\0');
    if (key === this.watchedPaths) return;
    this.watchedPaths = key;
    this.deps.watchSockets?.(paths);
  }

  /** Why `hostSocket` cannot be a forward's host socket (one of the instance's own files), or null. */
  private ownHostSocket(hostSocket: string): string | null {
    const own = ownFileAt(this.deps.instanceDir, hostSocket);
    return own && `host socket ${hostSocket} is instance ${this.deps.instance}'s ${own}: pick another path`;
  }

  /** The unix socket forward whose host socket file is `hostSocket`, if any. */
  private holder(hostSocket: string): Forward | undefined {
    return this.deps.bindings.refs(bindingKey('unix', hostSocket)).values().next().value;
  }
}
