// What `up` says on stderr of guest listeners that do not serve: a host user without privileges cannot bind the ports
// of the guest's own services below 1024 (chronyd's 323, a web server on 80): a note with the command that forwards one
// from a port it may bind, apart from the warning for conflicts and errors.
import { describe, expect, it } from 'vitest';
import { forwardView } from '../../../test/helpers/forward-view.js';
import type { ForwardView } from '../model.js';
import { detectedNotServing } from './up.js';

const forward = (proto: 'tcp' | 'udp', guestPort: number, hostPort: number, state: ForwardView['state']) =>
  forwardView(guestPort, { proto, hostAddrs: [`127.0.0.1:${hostPort}`, `[::1]:${hostPort}`], state });

describe("up's lines on guest listeners that do not serve", () => {
  it('notes guest services on their own port below 1024, with a forward add that works, and warns of the rest', () => {
    const lines = detectedNotServing('vm', [
      forward('tcp', 80, 80, 'privileged'),
      forward('udp', 323, 323, 'privileged'),
      forward('tcp', 3000, 3000, 'conflict'),
    ]);
    expect(lines).toEqual([
      'tether: warning: 1 guest listener not forwarded on every host address: tcp 127.0.0.1:3000 conflict; ' +
        '`tether forward ls vm` says why\n',
      'tether: note: 2 guest listeners on ports below 1024 not forwarded (this host user may not listen there): ' +
        'tcp 127.0.0.1:80, udp 127.0.0.1:323; to reach one, forward it from another port, e.g. ' +
        '`tether forward add vm 10080:80`\n',
    ]);
  });

  it('warns of a guest port a rule maps to a host port below 1024: the setup asked for it', () => {
    expect(detectedNotServing('vm', [forward('tcp', 8000, 80, 'privileged')])).toEqual([
      'tether: warning: 1 guest listener not forwarded on every host address: tcp 127.0.0.1:8000 privileged; ' +
        '`tether forward ls vm` says why\n',
    ]);
  });

  it('says nothing when every guest listener serves', () => {
    expect(detectedNotServing('vm', [forward('tcp', 8080, 8080, 'forwarding')])).toEqual([]);
  });
});
