// The human form of `tether status`: one line per part, the guest agent's scan interval in whole milliseconds.
import { describe, expect, it } from 'vitest';
import type { StatusView } from '../model.js';
import { statusText } from './render.js';

const now = new Date().toISOString();
const status: StatusView = {
  name: 'vm',
  pid: 42,
  startedAt: now,
  state: 'ready',
  ssh: { target: 'me@127.0.0.1:2222', state: 'connected', since: now, lastError: null, reconnects: 0 },
  guest: {
    version: '0.1.0',
    build: 'f91eb48',
    hostname: 'vm',
    kernel: '6.1',
    arch: 'x64',
    scanIntervalMs: 191.5239326477051, // adaptive: the guest reports what it currently uses
    agentPid: 7,
    agentStartedAt: now,
    listeners: 3,
  },
  link: { up: true, lastError: null, outdated: null, socket: '/run/tether/agent.sock' },
  requirements: [],
  forwards: { forwarding: 1, conflict: 0, privileged: 0, ignored: 2, suspended: 0, error: 0, total: 3 },
  mounts: { pending: 0, mounting: 0, mounted: 0, suspended: 0, error: 0, unmounted: 0, total: 0 },
  lastErrors: [],
  logFile: '/tmp/current.log',
};

describe('status text', () => {
  it('shows the guest scan interval in whole milliseconds and the forward counts by state', () => {
    const text = statusText(status);
    expect(text).toContain('scan every 192 ms, 3 listeners');
    expect(text).toContain('forwards:     3 (1 forwarding, 2 ignored)');
  });
});
