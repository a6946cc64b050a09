// Reply output for one session: replies produced during one event-loop turn are written together, concatenated
// into one buffer (one write syscall, or one run of SSH channel packets, for many replies). Large READ replies are
// copied too: a DATA reply is its payload plus a 13-byte header, and the SSH channel cuts every write into packets
// of at most 32 KiB on its own, so a 32 KiB read written alone costs a full packet and a 13-byte one — twice the
// packets (and encryptions) sftp-server's piped output costs. Concatenated, a burst of readahead replies fills
// whole packets; copying 32 KiB costs far less than the extra packet. Reports backpressure to the session, and
// counts the bytes it holds so the session can stop answering within a turn (see Session.onData).

import type { Writable } from 'node:stream';

/** Replies of one turn are merged into writes of about this size (bounding each copy). */
const WRITE_CHUNK = 1024 * 1024;

export class ReplyWriter {
  private pending: Buffer[] = [];
  private scheduled = false;
  /** Bytes of the replies held for the end of the turn. */
  pendingBytes = 0;

  /**
   * `onBlocked` runs when the stream's buffer is full; the stream's own 'drain' event signals the end of it.
   * `onWritten` runs after a flush the stream took without asking to wait.
   */
  constructor(
    private readonly stream: Writable,
    private readonly onBlocked: () => void,
    private readonly onWritten: () => void = () => {},
  ) {}

  send(packet: Buffer): void {
    this.pending.push(packet);
    this.pendingBytes += packet.length;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /** Writes everything queued now (also used before the stream is ended). */
  readonly flush = (): void => {
    this.scheduled = false;
    const packets = this.pending;
    if (packets.length === 0) return;
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.stream.writable) return;
    let ok = true;
    let group: Buffer[] = [];
    let groupBytes = 0;
    const writeGroup = () => {
      if (group.length === 0) return;
      ok = this.stream.write(group.length === 1 ? group[0] : Buffer.concat(group, groupBytes)) && ok;
      group = [];
      groupBytes = 0;
    };
    for (const p of packets) {
      if (groupBytes > 0 && groupBytes + p.length > WRITE_CHUNK) writeGroup();
      group.push(p);
      groupBytes += p.length;
    }
    writeGroup();
    if (ok) this.onWritten();
    else this.onBlocked();
  };
}
