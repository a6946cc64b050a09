import type { Peer } from '@tether/protocol';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { silentLogger } from '../log.js';
import type { SshSession } from '../ssh/index.js';
import { AgentLink } from './agent-link.js';

describe('requestScan', () => {
  it('asks the linked guest agent for a scan, one request at a time and at most one per 250 ms', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const link = new AgentLink({} as SshSession, {
      socket: '/run/tether/agent.sock',
      logger: silentLogger(),
      agent: 'tether/test',
    });
    link.requestScan(); // no link yet: nothing to ask
    const requests: string[] = [];
    let answer = () => {};
    link.peer = {
      request: (method: string) => {
        requests.push(method);
        return new Promise<void>((resolve) => {
          answer = resolve;
        });
      },
    } as unknown as Peer;
    link.requestScan();
    link.requestScan();
    expect(requests).toEqual(['ports.snapshot']); // the first is still unanswered
    answer();
    await new Promise((r) => setImmediate(r));
    link.requestScan(); // answered, but asked again too soon
    expect(requests).toEqual(['ports.snapshot']);
    vi.advanceTimersByTime(250);
    link.requestScan();
    expect(requests).toEqual(['ports.snapshot', 'ports.snapshot']);
  });
});
