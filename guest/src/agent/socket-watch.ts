// The guest unix socket paths a host forwards (`/var/run/docker.sock`): each is looked at every POLL_MS, and a change
// (it appeared, went, was replaced or had its mode changed) is announced, so the host sees a daemon that starts
// after it within a second instead of on a slow timer of its own over SSH (each such look is an SSH session in the
// guest's logs). A stat per path and tick, in the guest: nothing is connected to. Owns one timer and one signature
// per path; one per client session.
import { statSync } from 'node:fs';

const POLL_MS = 1_000;

export class SocketWatch {
  private signatures = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly changed: (path: string) => void,
    private readonly pollMs = POLL_MS,
  ) {}

  /** Replaces the paths watched; a path's state when it is added is its starting point (not announced). */
  set(paths: readonly string[]): void {
    this.signatures = new Map(paths.map((p) => [p, this.signatures.get(p) ?? signature(p)]));
    if (this.signatures.size === 0) this.stop();
    else if (!this.timer) {
      this.timer = setInterval(() => this.poll(), this.pollMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private poll(): void {
    for (const [path, before] of this.signatures) {
      const now = signature(path);
      if (now === before) continue;
      this.signatures.set(path, now);
      this.changed(path);
    }
  }
}

/** What a path is now, as far as a forward cares: which socket file (symlinks followed), and its mode. */
function signature(path: string): string {
  try {
    const s = statSync(path);
    return s.isSocket() ? `socket ${s.dev}:${s.ino} ${s.mode} ${s.ctimeMs}` : 'not a socket';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unreadable';
  }
}
