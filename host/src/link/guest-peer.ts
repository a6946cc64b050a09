// A protocol peer on a channel to the guest agent, with what every link logs about it: handlers that failed, and
// events the host ignores. Owns only that logging; what the link does with the peer's events is the link's.
import type { Duplex } from 'node:stream';
import { Peer } from '@tether/protocol';
import type { Logger } from '../log.js';

/** Names of ignored guest events logged per link (each once); past them, one line says more came. */
const MAX_IGNORED_EVENT_NAMES = 16;

export interface GuestPeer {
  peer: Peer;
  /** Resolves with the reason the peer closed. */
  closed: Promise<string>;
  /** The error that closed the peer, once it has (a ProtocolError when the guest broke the protocol). */
  closeError(): Error | undefined;
}

/** A peer speaking as `agent` on `channel`; requests time out after `timeoutMs`. */
export function guestPeer(channel: Duplex, opts: { agent: string; timeoutMs: number }, log: Logger): GuestPeer {
  const peer = new Peer(channel, { agent: opts.agent, timeoutMs: opts.timeoutMs });
  let closeError: Error | undefined;
  const closed = new Promise<string>((resolve) =>
    peer.once('close', (reason: string, error?: Error) => {
      closeError = error;
      resolve(reason);
    }),
  );
  peer.on('handlerError', (name: string, err: Error) =>
    log.error({ err, event: name }, `handling ${name} failed: ${err.message}`),
  );
  const logIgnored = ignoredEventLog(log);
  peer.on('unhandled', (name: string) =>
    logIgnored(name, `ignoring ${name} events from the guest: the host does not handle them`),
  );
  peer.on('unknownEvent', (name: string) =>
    logIgnored(name, `ignoring unknown event ${name} from the guest (a newer tether-guest?)`),
  );
  return { peer, closed, closeError: () => closeError };
}

/**
 * A guest may flood events the host never handles (fs.events go the other way), or endless new names: one line per
 * name per link, for the first few names.
 */
function ignoredEventLog(log: Logger): (name: string, msg: string) => void {
  const ignored = new Set<string>();
  return (name, msg) => {
    if (ignored.has(name) || ignored.size > MAX_IGNORED_EVENT_NAMES) return;
    ignored.add(name);
    if (ignored.size > MAX_IGNORED_EVENT_NAMES)
      log.warn(
        { names: MAX_IGNORED_EVENT_NAMES },
        `the guest sends events of more than ${MAX_IGNORED_EVENT_NAMES} names the host ignores; no more are logged on this link`,
      );
    else log.warn({ event: name }, msg);
  };
}
