// The host agent's provisioning runs (provision/ensure.ts does the work): one at a time, shared by whoever asks (the
// link finding no agent, requirement 3 waiting for one), a replacement asked for during a plain run queued after it,
// and what the waiting requirement shows: each step as it starts, the summary, the failure.
import { EventEmitter } from 'node:events';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { ensureGuestAgent, type GuestShell } from '../provision/index.js';

/** Events: `step` (what: string) as each slow step starts, `failed` (Error) when a run fails. */
export class Provisioner extends EventEmitter {
  private running: Promise<string> | null = null;
  /** The run under way replaces the running agent. */
  private replacing = false;
  /** The last successful run's summary, for requirement 3. */
  summary: string | null = null;
  /** Why the last run failed, until one succeeds (`status`, doctor: what keeps the guest agent from starting). */
  lastFailure: string | null = null;
  /** The step of the run under way (`uploading …: 50 of 100 MB`), for `status`; null between runs. */
  step: string | null = null;

  constructor(
    private readonly shell: GuestShell,
    private readonly config: Pick<Config, 'ssh' | 'guestAgent'>,
    private readonly bundleDir: string,
    private readonly log: Logger,
    /** Told the guest agent's socket after each successful run (provisioning may move it to the user's own). */
    private readonly onSocket: (socket: string) => void,
  ) {
    super();
  }

  /** Whether a run is under way (`status`: the host agent is installing or starting the guest agent). */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Installs or starts the guest agent, or joins the run under way; resolves with its summary. */
  run(replace = false): Promise<string> {
    // A replacement asked for while a plain run is under way (one that found the agent's socket taking connections,
    // and so left it alone) runs after it, not folded into it.
    if (replace && this.running && !this.replacing) return this.running.catch(() => '').then(() => this.run(true));
    if (!this.running) this.replacing = replace;
    this.running ??= ensureGuestAgent(this.shell, this.config, this.bundleDir, this.log, {
      replace,
      onStep: (what) => {
        this.step = what;
        this.emit('step', what);
      },
    })
      .then(
        ({ summary, socket }) => {
          this.onSocket(socket);
          this.summary = summary;
          this.lastFailure = null;
          return summary;
        },
        (err: Error) => {
          this.lastFailure = err.message;
          this.emit('failed', err);
          throw err;
        },
      )
      .finally(() => {
        this.running = null;
        this.replacing = false;
        this.step = null;
      });
    return this.running;
  }
}
