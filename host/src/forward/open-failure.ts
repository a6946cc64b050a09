// What a channel open that failed means for a forward: a refusal by the guest's sshd names the sshd_config options to
// change; any other failure is the connection's own and is warned about, at a rate a retrying client cannot flood.
import type { Logger } from '../log.js';
import { type ChannelOpenError, sshdForwardingFix } from '../ssh/index.js';
import type { Forward } from './forward.js';

/** At most one warning per forward this often about connections that could not be forwarded. */
const OPEN_WARN_INTERVAL_MS = 5_000;

/** Why a TCP forward's channels fail when the guest's sshd prohibits them, with what to change there. */
export function sshdRefusal(err: ChannelOpenError): string {
  return `the guest's sshd refuses the channel (${err.message}): ${sshdForwardingFix('tcp')}`;
}

/**
 * A connection that could not be forwarded is worth a warning, but a client retrying against a dead link would fill
 * the log and the status's last errors: at most one line per forward every OPEN_WARN_INTERVAL_MS, counting the others.
 */
export function warnOpenFailure(log: Logger, f: Forward, err: Error): void {
  const w = f.openWarn;
  const now = performance.now();
  if (now - w.at < OPEN_WARN_INTERVAL_MS) {
    w.suppressed++;
    return;
  }
  const more = w.suppressed > 0 ? ` (${w.suppressed} more since the last warning)` : '';
  log.warn(
    { forward: f.id, guest: f.guestAddr, err: err.message, suppressed: w.suppressed },
    `cannot forward a connection to guest ${f.guestAddr}: ${err.message}${more}`,
  );
  w.at = now;
  w.suppressed = 0;
}
