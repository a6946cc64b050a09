// The host's UDP flow table against a recording agent link: a flow per host client, and at the cap the flow used
// least recently makes room (the guest is told to close it first), so one-shot clients cannot lock newcomers out.
import type dgram from 'node:dgram';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { GuestTarget } from './binding.js';
import { UdpFlows } from './udp.js';

const sent: { e: string; d: { flow: number } }[] = [];
const peer = {
  closed: false,
  queuedBytes: 0,
  onEvent: () => undefined,
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
});
