// Echo suppression for host→guest file events when the guest's touch changes the host file: a guest agent from
// before the marker touch touches with the current time, which the server applies (a marker touch is answered
// without any change, by both drivers, so it has no echoes). The guest agent makes its kernel notice a host edit by
// touching the path through sshfs (utimes); that SETSTAT reaches the host file, and the host watcher would report it
// as a new 'change' that goes back to the guest, which touches again: a loop. A path we sent is remembered for a
// short window with its size; a 'change' inside that window that left the size alone and set a whole-second mtime
// (SFTP v3 carries seconds only, while an editor's write has nanoseconds on every common file system) is taken for
// the touch and dropped. Pure bookkeeping: no I/O, no timers.

const ECHO_WINDOW_MS = 2_000;

interface Sent {
  at: number;
  size: number | undefined;
}

export class EchoFilter {
  private readonly sent = new Map<string, Sent>();

  constructor(
    private readonly windowMs = ECHO_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** A path we just told the guest about; `size` is the file size then (undefined for directories/unknown). */
  record(path: string, size: number | undefined): void {
    this.sent.set(path, { at: this.now(), size });
    if (this.sent.size > 4096) this.prune();
  }

  /** true when a 'change' of `path` with this size and mtime is most likely the guest's own touch coming back. */
  isEcho(path: string, size: number | undefined, mtimeMs?: number): boolean {
    const s = this.sent.get(path);
    if (!s) return false;
    if (this.now() - s.at > this.windowMs) {
      this.sent.delete(path);
      return false;
    }
    return s.size === size && (mtimeMs === undefined || mtimeMs % 1000 === 0);
  }

  private prune(): void {
    const cutoff = this.now() - this.windowMs;
    for (const [p, s] of this.sent) if (s.at < cutoff) this.sent.delete(p);
  }
}
