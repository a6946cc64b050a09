// doctor's advice for a forward in conflict: another process (lsof finds it) or another of tether's own forwards
// (lsof would only show tether: the fix is to remove one of them).
import { describe, expect, it } from 'vitest';
import type { ForwardView } from '../model.js';
import { forwardProblem } from './doctor.js';

const conflict = (error: string): ForwardView => ({
  id: 'tcp/127.0.0.1:8097',
  proto: 'tcp',
  guestAddr: '127.0.0.1:8097',
  hostAddrs: ['127.0.0.1:18150'],
  state: 'conflict',
  process: null,
  connections: 0,
  bytesIn: 0,
  bytesOut: 0,
  since: new Date(0).toISOString(),
  error,
  source: 'runtime',
});

describe('doctor on a forward in conflict', () => {
  it('points at lsof when another process holds the host port', () => {
    const r = forwardProblem(conflict('host address 127.0.0.1:18150 is in use by another process; retrying'));
    expect(r.state).toBe('fail');
    expect(r.fix).toMatch(/free host port 18150 \(see `lsof -nP -i :18150`\)/);
  });

  it('names the forward to remove when one of tether’s own holds it', () => {
    const r = forwardProblem(
      conflict(
        "host address 127.0.0.1:18150 is in use by tether's forward tcp/127.0.0.1:8090->18150 (on 127.0.0.1:18150); retrying until it is free",
      ),
    );
    expect(r.fix).toMatch(/^remove one of the two: tether forward rm NAME tcp\/127\.0\.0\.1:8090->18150,/);
    expect(r.fix).not.toMatch(/lsof/);
  });
});
