// The guest socket paths the host forwards, which the guest agent is asked to watch on every link so that it says
// when one changes (`sockets.changed`). Owns the list; whether the agent watches is reported to the link, which
// tells the forwards.
import type { Peer } from '@tether/protocol';
import type { Logger } from '../log.js';

export class SocketWatch {
  private paths: string[] = [];

  /** `watching` hears whether the agent on `peer` watches, while `current(peer)` says its link is the current one. */
  constructor(
    private readonly log: Logger,
    private readonly current: (peer: Peer) => boolean,
    private readonly watching: (on: boolean) => void,
  ) {}

  /** The paths to watch from now on; sent at once to `peer` when a link is up. */
  set(paths: string[], peer: Peer | null): void {
    this.paths = paths;
    if (peer) this.send(peer);
  }

  /** A link came up: its agent is asked for the paths, if there are any. */
  resume(peer: Peer): void {
    if (this.paths.length > 0) this.send(peer);
  }

  private send(peer: Peer): void {
    peer.request('sockets.watch', { paths: this.paths }).then(
      () => {
        if (this.current(peer)) this.watching(true);
      },
      (err: Error) => {
        this.log.debug({ err: err.message }, `the guest agent does not watch socket paths: ${err.message}`);
        if (this.current(peer)) this.watching(false);
      },
    );
  }
}
