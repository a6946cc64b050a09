// Whether the guest agent behind a link still answers. A hung or stopped agent keeps its socket and the channel open,
// and nothing else would notice: a link that is up is pinged, and one whose ping goes unanswered is closed. That agent
// had its full wait already, so the next link's hello is waited for only briefly before it is taken for hung. Owns
// the ping timer and that memory; replacing a hung agent is agent-starts.ts's job.
import { type Peer, RequestTimeoutError } from '@tether/protocol';

/** How often a link that is up is pinged, and how long an answer may take. */
const LIVENESS_INTERVAL_MS = 5_000;
const LIVENESS_TIMEOUT_MS = 10_000;
/** How long the hello of a link after one whose agent stopped answering pings is waited for. */
const HUNG_HELLO_MS = 3_000;

export interface LivenessOptions {
  /** How often a link that is up is pinged (default 5 s). */
  livenessIntervalMs?: number;
  /** How long an answer to a ping may take (default 10 s). */
  livenessTimeoutMs?: number;
}

export class Liveness {
  /** The last link ended because its agent stopped answering pings. */
  private unanswered = false;

  constructor(private readonly opts: LivenessOptions) {}

  /** How long the next hello is waited for: `fullMs`, or HUNG_HELLO_MS after an agent that stopped answering. */
  helloTimeout(fullMs: number): number {
    return this.unanswered ? Math.min(fullMs, HUNG_HELLO_MS) : fullMs;
  }

  /** A new SSH connection (a VM resumed, a guest back), a new agent or an answer: the next hello gets the full wait. */
  forget(): void {
    this.unanswered = false;
  }

  /** Pings `peer` until the returned function stops it; a ping that gets no answer in time closes `peer`. */
  watch(peer: Peer): () => void {
    const every = this.opts.livenessIntervalMs ?? LIVENESS_INTERVAL_MS;
    const within = this.opts.livenessTimeoutMs ?? LIVENESS_TIMEOUT_MS;
    let pinging = false;
    const timer = setInterval(() => {
      if (pinging) return;
      pinging = true;
      peer.ping(within).then(
        () => {
          pinging = false;
        },
        (err: Error) => {
          if (!(err instanceof RequestTimeoutError)) return;
          this.unanswered = true;
          peer.close(
            `the guest agent did not answer a ping within ${within} ms (the agent is hung or stopped, the whole VM is paused, or the SSH link stalls)`,
          );
        },
      );
    }, every);
    timer.unref();
    return () => clearInterval(timer);
  }
}
