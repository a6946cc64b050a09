import type { Listener, Peer, PortDelta, PortSnapshot } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { PortFeed } from './port-feed.js';

const listener = (port: number, command: string | null = null): Listener => ({
  proto: 'tcp',
  family: 4,
  ip: '127.0.0.1',
  port,
  pid: null,
  command,
});
const delta = (seq: number, port: number): PortDelta => ({ seq, added: [listener(port)], removed: [] });

/** A peer that hands its ports.delta handler to the test and records the snapshots asked for. */
function fakePeer() {
  const asked: Array<(s: PortSnapshot) => void> = [];
  let onDelta: (d: PortDelta) => void = () => {};
  const peer = {
    onEvent: (_name: string, handler: (d: PortDelta) => void) => {
      onDelta = handler;
    },
    request: () => new Promise<PortSnapshot>((resolve) => asked.push(resolve)),
    close: () => {},
  } as unknown as Peer;
  return { peer, asked, delta: (d: PortDelta) => onDelta(d) };
}

function feed(current = () => true) {
  const guest = fakePeer();
  const seen: string[] = [];
  const ports = new PortFeed(
    guest.peer,
    current,
    {
      snapshot: (ls) => seen.push(`snapshot ${ls.map((l) => l.port).join(',')}`),
      delta: (d) => seen.push(`delta ${d.seq}`),
    },
    silentLogger(),
  );
  return { guest, ports, seen };
}

describe('PortFeed', () => {
  it('holds deltas until the subscription snapshot, then applies those after its sequence number', () => {
    const { guest, ports, seen } = feed();
    guest.delta(delta(5, 81));
    guest.delta(delta(6, 82));
    expect(seen).toEqual([]);
    ports.applySnapshot({ seq: 5, listeners: [listener(80)] });
    expect(seen).toEqual(['snapshot 80', 'delta 6']);
  });

  it('asks for a fresh snapshot on a sequence gap and holds what comes meanwhile', async () => {
    const { guest, ports, seen } = feed();
    ports.applySnapshot({ seq: 1, listeners: [] });
    guest.delta(delta(3, 81));
    guest.delta(delta(4, 82));
    expect(guest.asked).toHaveLength(1);
    guest.asked[0]?.({ seq: 3, listeners: [listener(81)] });
    await Promise.resolve();
    expect(seen).toEqual(['snapshot ', 'snapshot 81', 'delta 4']);
  });

  it('stops once its link is no longer the current one', () => {
    let current = true;
    const { guest, ports, seen } = feed(() => current);
    ports.applySnapshot({ seq: 1, listeners: [] });
    current = false;
    guest.delta(delta(2, 81));
    expect(seen).toEqual(['snapshot ']);
  });

  it('makes guest command lines inert', () => {
    const got: Array<string | null> = [];
    const ports = new PortFeed(
      fakePeer().peer,
      () => true,
      { snapshot: (ls) => got.push(...ls.map((l) => l.command)), delta: () => {} },
      silentLogger(),
    );
    ports.applySnapshot({ seq: 1, listeners: [listener(80, 'node\nserver.js'), listener(81)] });
    expect(got).toEqual(['node server.js', null]);
  });
});
