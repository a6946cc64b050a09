// Which other tether instance holds a busy host address. Every instance under one TETHER_HOME (this instance
// directory's siblings) forwards its own VM's ports onto the same host loopback, so a port busy here is often one of
// theirs (two VMs whose guests both serve 8080): naming that instance, and its forward, is the fix the operator needs,
// where "another process" would send them to lsof, which only shows a tether agent. Asked only when a bind failed with
// EADDRINUSE, over the peers' control API (GET /v1/forwards) with a short timeout; each peer's answer is kept for a
// moment, so a burst of conflicts asks it once. Never changes anything in a peer.
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ControlClient } from '../control/client.js';
import { bindingKey, keysOverlap } from '../forward/host-bindings.js';
import { instanceFiles, listInstances } from '../instance.js';
import type { ForwardHolder, ForwardView } from '../model.js';

/**
 * How long one peer's forwards are reused (the conflicts of one burst of guest listeners ask it once; a longer wait
 * would name no holder for a port the peer took since), and how long a peer gets to answer.
 */
const FRESH_MS = 250;
const ANSWER_MS = 1_000;

interface Asked {
  at: number;
  forwards: Promise<ForwardView[]>;
}

export class PeerForwards {
  private readonly asked = new Map<string, Asked>();

  /** `instanceDir`: this instance's directory; its siblings with a control socket are the peers. */
  constructor(private readonly instanceDir: string) {}

  /** The peer instance whose forward listens on an address overlapping the binding `key` (`tcp/127.0.0.1:8080`). */
  async holderOf(key: string): Promise<Extract<ForwardHolder, { kind: 'instance' }> | null> {
    if (key.startsWith('unix/')) return null;
    const home = dirname(this.instanceDir);
    const self = basename(this.instanceDir);
    let peers: string[];
    try {
      peers = listInstances(home).filter((name) => name !== self);
    } catch {
      return null; // an unreadable home: who holds the port stays unknown, the conflict is reported all the same
    }
    const answers = await Promise.all(
      peers.map(async (name) => ({ name, forwards: await this.forwardsOf(home, name) })),
    );
    for (const { name, forwards } of answers)
      for (const f of forwards) {
        // A suspended forward keeps its host listeners while its guest is unreachable (a VM shut down without
        // `tether down`): it holds the port as much as one that serves.
        if ((f.state !== 'forwarding' && f.state !== 'suspended') || f.proto === 'unix') continue;
        const address = f.hostAddrs.find((a) => keysOverlap(key, bindingKey(f.proto, a)));
        if (address) return { kind: 'instance', instance: name, id: f.id, address, state: f.state };
      }
    return null;
  }

  /** A peer's forwards; none when it runs no agent or does not answer in time. */
  private forwardsOf(home: string, name: string): Promise<ForwardView[]> {
    const now = Date.now();
    const known = this.asked.get(name);
    if (known && now - known.at < FRESH_MS) return known.forwards;
    const socket = instanceFiles(join(home, name)).socket;
    const forwards = existsSync(socket)
      ? new ControlClient(socket, ANSWER_MS).forwards().catch(() => [])
      : Promise.resolve([]);
    this.asked.set(name, { at: now, forwards });
    return forwards;
  }
}
