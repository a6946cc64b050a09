// A connection whose guest said it shuts down (the guest agent's goodbye). The guest's sshd goes with it, and often
// without closing the connection (the guest's network stops first), so keepalive alone would notice only after
// ssh.keepaliveInterval × keepaliveCountMax, and reconnecting to a guest that reboots in seconds would wait for it.
// Owns the probe: a channel open to a port nothing should listen on, every PROBE_EVERY_MS; any answer (a refusal is
// one) shows sshd is still there, and none within SILENCE_MS ends the connection.
import type { Client } from 'ssh2';

const PROBE_EVERY_MS = 1_000;
const SILENCE_MS = 3_000;
/** A guest that keeps its sshd this long after saying it shuts down is left to keepalive again. */
const WATCH_MS = 120_000;
/** TCP port 1 (tcpmux): closed on any guest we know of; sshd answers the open with a refusal. */
const PROBE_PORT = 1;

export interface GoingAwayOptions {
  /** Whether `client` is still the session's connection (the probe stops once it is not). */
  current: () => boolean;
  /** Ends the connection as gone, with why. */
  lost: (reason: string) => void;
  target: string;
}

/** Starts probing `client`; the probe stops by itself once the connection is replaced or WATCH_MS have passed. */
export function watchGoingAway(client: Client, opts: GoingAwayOptions): void {
  const until = performance.now() + WATCH_MS;
  const probe = () => {
    if (!opts.current() || performance.now() > until) return;
    let answered = false;
    const silence = setTimeout(() => {
      if (answered || !opts.current()) return;
      opts.lost(
        `the guest is shutting down: ${opts.target} answered nothing for ${SILENCE_MS / 1000} s after its guest agent said so`,
      );
    }, SILENCE_MS);
    silence.unref();
    try {
      client.forwardOut('127.0.0.1', 0, '127.0.0.1', PROBE_PORT, (_err, channel) => {
        answered = true;
        clearTimeout(silence);
        channel?.close();
        setTimeout(probe, PROBE_EVERY_MS).unref();
      });
    } catch {
      // Not writable: the connection is closing anyway.
      clearTimeout(silence);
    }
  };
  probe();
}
