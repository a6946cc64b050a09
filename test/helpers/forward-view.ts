// A ForwardView as the control API gives it, for tests of what the CLI and the control server make of one: a
// detected TCP forward of guest 127.0.0.1:PORT on both host loopbacks, serving, with zeroed counters.
import type { ForwardView } from '../../host/src/model.js';

export function forwardView(port: number, over: Partial<ForwardView> = {}): ForwardView {
  const proto = over.proto ?? 'tcp';
  return {
    id: `${proto}/127.0.0.1:${port}`,
    proto,
    guestAddr: `127.0.0.1:${port}`,
    hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    state: 'forwarding',
    process: null,
    connections: 0,
    bytesIn: 0,
    bytesOut: 0,
    since: new Date(0).toISOString(),
    error: null,
    heldBy: null,
    cause: null,
    source: 'detected',
    ...over,
  };
}
