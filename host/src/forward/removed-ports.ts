// What `forward rm` said of detected forwards: the guest listeners it removed, and their guest ports, ignored while the
// agent runs (across restarts of their servers) until `tether down`, or until a `forward add` of the port asks for
// them again. A server restarted on another address of a removed port (`--host 0.0.0.0` after `127.0.0.1`) stays
// ignored too, as the operator named the port.
import type { Listener } from '@tether/protocol';
import { portOfAddr } from '../address.js';
import type { Proto, Reason } from './forward.js';
import { listenerId, portKey } from './ids.js';

/** The reason of a guest listener that `forward rm` ignores until `tether down`. */
const REMOVED = 'removed by the operator';

export class RemovedPorts {
  private readonly ids = new Set<string>();
  /** Guest ports (`proto/port`) of the listeners removed. */
  private readonly ports = new Set<string>();

  /** The reason a forward removed just now shows. */
  static readonly now: Reason<'removed'> = { cause: 'removed', text: `${REMOVED} (tether forward rm)` };

  /** Listener `id`, on guest port `port`, was removed. */
  add(id: string, proto: Proto, port: number): void {
    this.ids.add(id);
    this.ports.add(portKey(proto, port));
  }

  /** Why `l` is ignored, when `forward rm` removed it or its port; null otherwise. */
  reasonFor(l: Listener): Reason<'removed'> | null {
    return this.ids.has(listenerId(l)) || this.ports.has(portKey(l.proto, l.port))
      ? { cause: 'removed', text: REMOVED }
      : null;
  }

  /** Lifts what was said of guest port `port`: false when nothing was. */
  lift(proto: Proto, port: number): boolean {
    if (!this.ports.delete(portKey(proto, port))) return false;
    const ofPort = (id: string) => id.startsWith(`${proto}/`) && portOfAddr(id.slice(proto.length + 1)) === port;
    for (const id of [...this.ids]) if (ofPort(id)) this.ids.delete(id);
    return true;
  }
}
