// Test helper: a protocol client of the agent over its unix socket, recording the events it receives.
import { once } from 'node:events';
import { connect } from 'node:net';
import { type EventData, type EventName, Peer } from '@tether/protocol';

export interface TestClient {
  peer: Peer;
  events: { [E in EventName]?: EventData<E>[] };
}

export async function connectClient(socketPath: string, names: EventName[] = ['ports.delta']): Promise<TestClient> {
  const socket = connect(socketPath);
  await once(socket, 'connect');
  const peer = new Peer(socket, { agent: 'tether-test/0', caps: [] });
  const events: TestClient['events'] = {};
  for (const name of names) {
    const list: unknown[] = [];
    (events as Record<string, unknown[]>)[name] = list;
    peer.onEvent(name, (d) => list.push(d));
  }
  await peer.ready;
  return { peer, events };
}
