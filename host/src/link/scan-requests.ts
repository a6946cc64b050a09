// Asking the guest agent to scan now rather than at its next tick, for a host that just saw a guest port refuse: what
// changed comes back as the usual delta. Owns only the pacing of those requests, across links.
import type { Peer } from '@tether/protocol';
import type { Logger } from '../log.js';

/** The guest is asked to scan at once at most this often; its own scans run every 100 ms or so. */
const SCAN_REQUEST_MS = 250;

/**
 * One request at a time, and at most one per SCAN_REQUEST_MS: a client retrying a closed port in a loop must not keep
 * the guest sending its whole listener table (the request answers with it).
 */
export class ScanRequests {
  private waiting = false;
  /** performance.now() of the last request sent. */
  private lastSent = Number.NEGATIVE_INFINITY;

  constructor(private readonly log: Logger) {}

  /** Asks `peer` to scan, unless there is no link or the pacing holds the request back. */
  request(peer: Peer | null): void {
    const now = performance.now();
    if (!peer || this.waiting || now - this.lastSent < SCAN_REQUEST_MS) return;
    this.waiting = true;
    this.lastSent = now;
    peer
      .request('ports.snapshot', {})
      .catch((err: Error) => this.log.debug({ err: err.message }, 'asking the guest agent to scan failed'))
      .finally(() => {
        this.waiting = false;
      });
  }
}
