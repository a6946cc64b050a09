// The host's UDP flow table against a recording agent link: a flow per host client, and at the cap the flow used
// least recently makes room (the guest is told to close it first), so one-shot clients cannot lock newcomers out; a
// client whose host port now leads to another guest target gets a new flow.
import type dgram from 'node:dgram';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { GuestTarget } from './binding.js';
import { UdpFlows } from './udp.js';

const sent: { e: string; d: { flow: number } }[] = [];
const handlers = new Map<string, (d: unknown) => void>();
const peer = {
  closed: false,
  queuedBytes: 0,
  onEvent: (e: string, fn: (d: unknown) => void) => void handlers.set(e, fn),
  once: () => undefined,
  notify: (e: string, d: { flow: number }) => void sent.push({ e, d }),
};
const target: GuestTarget = {
  id: 'udp/127.0.0.1:53',
  guestIP: '127.0.0.1',
  guestPort: 53,
  stats: { connections: 0, bytesIn: 0, bytesOut: 0 },
  opened: () => undefined,
};
const socket = {} as dgram.Socket;
const from = (port: number) => ({ address: '127.0.0.1', port, family: 'IPv4', size: 1 }) as dgram.RemoteInfo;

describe('UdpFlows', () => {
  let flows: UdpFlows;
  afterEach(() => {
    flows.stop();
    sent.length = 0;
  });

  it('makes room at the cap by ending the flow used least recently, telling the guest first', async () => {
    flows = new UdpFlows({ logger: pino({ level: 'silent' }), maxFlows: 3 });
    flows.attach(peer as never);
    const flowOf = (port: number) => {
      flows.send(socket, '127.0.0.1:53', from(port), target, Buffer.from('q'));
      return sent.at(-1)!.d.flow;
    };
    const [a, b, c] = [flowOf(40001), flowOf(40002), flowOf(40003)];
    await new Promise((r) => setTimeout(r, 2));
    expect(flowOf(40001)).toBe(a); // a is used again: b is now the least recent
    sent.length = 0;
    const d = flowOf(40004);
    expect(sent).toEqual([
      { e: 'udp.close', d: { flow: b } },
      { e: 'udp.dgram', d: expect.objectContaining({ flow: d }) },
    ]);
    expect(flows.flows).toBe(3);
    expect(target.stats.connections).toBe(3);
    expect(new Set([a, c, d]).size).toBe(3);
    expect(flows.dropped).toBe(0);
  });

  it('gives a client a new flow when its host port leads to another guest target, and moves the counters', () => {
    flows = new UdpFlows({ logger: pino({ level: 'silent' }) });
    flows.attach(peer as never);
    const stats = () => ({ connections: 0, bytesIn: 0, bytesOut: 0 });
    const first = { ...target, stats: stats() };
    flows.send(socket, '127.0.0.1:53', from(40001), first, Buffer.from('q'));
    const old = sent.at(-1)!.d.flow;

    // The forward re-made for the same guest address: the flow stays, counted by the new forward.
    const remade = { ...first, stats: stats() };
    flows.send(socket, '127.0.0.1:53', from(40001), remade, Buffer.from('q'));
    expect(sent.at(-1)).toEqual({ e: 'udp.dgram', d: expect.objectContaining({ flow: old }) });
    expect([first.stats.connections, remade.stats.connections]).toEqual([0, 1]);

    // `forward add 53:5353/udp`: the guest relay must not see the old flow name another port.
    sent.length = 0;
    const moved = { ...target, id: 'udp/127.0.0.1:5353', guestPort: 5353, stats: stats() };
    flows.send(socket, '127.0.0.1:53', from(40001), moved, Buffer.from('q'));
    expect(sent).toEqual([
      { e: 'udp.close', d: { flow: old } },
      { e: 'udp.dgram', d: expect.objectContaining({ flow: expect.any(Number), port: 5353 }) },
    ]);
    expect(sent[1].d.flow).not.toBe(old);
    expect([remade.stats.connections, moved.stats.connections]).toEqual([0, 1]);
    expect(flows.flows).toBe(1);
  });

  it("hands a flow the guest refused to its forward as a failed open, with the guest's reason", () => {
    flows = new UdpFlows({ logger: pino({ level: 'silent' }) });
    flows.attach(peer as never);
    const failures: (Error | null)[] = [];
    const refusing = {
      ...target,
      stats: { connections: 0, bytesIn: 0, bytesOut: 0 },
      opened: (e: Error | null) => void failures.push(e),
    };
    flows.send(socket, '127.0.0.1:53', from(40001), refusing, Buffer.from('q'));
    const flow = sent.at(-1)!.d.flow;
    handlers.get('udp.close')!({ flow, refused: 'no guest UDP listener at 127.0.0.1:53' });
    expect(failures.map((e) => e?.message)).toEqual([
      'the guest agent refused udp from 127.0.0.1:40001: no guest UDP listener at 127.0.0.1:53',
    ]);
    expect([flows.flows, flows.dropped, refusing.stats.connections]).toEqual([0, 1, 0]);
    // An idle flow the guest ends is no failure.
    flows.send(socket, '127.0.0.1:53', from(40002), refusing, Buffer.from('q'));
    handlers.get('udp.close')!({ flow: sent.at(-1)!.d.flow });
    expect([failures.length, flows.flows, flows.dropped]).toEqual([1, 0, 1]);
  });
});
