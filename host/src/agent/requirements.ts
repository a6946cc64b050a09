// The host agent's boot requirements ("requirement 3 of 5: guest agent provisioned"), as `up` follows them and
// `status` lists them: each one's state, detail and time, announced on every change, and the log line of each
// outcome (an `ok` line is what settles the requirement's earlier failure in `status`: problem-subjects.ts). Owns
// only that bookkeeping; what each requirement checks is the agent's.
import type { Logger } from '../log.js';
import { REQUIREMENT, type RequirementView } from '../model.js';

const NAME_OF: Record<keyof typeof REQUIREMENT, string> = {
  sshReachable: 'ssh reachable',
  hostKey: 'host key',
  provisioned: 'guest agent provisioned',
  agentRunning: 'guest agent running',
  mountsReady: 'mounts ready',
};
/** Names by index - 1. */
const NAMES = Object.entries(REQUIREMENT)
  .sort((a, b) => a[1] - b[1])
  .map(([key]) => NAME_OF[key as keyof typeof REQUIREMENT]);

export interface RunOptions {
  /** Why the check failed, from its error (e.g. that the agent was stopped while it waited). */
  reason?: (err: Error) => string;
  /** A failure makes the requirement `skipped` with this detail instead of `failed` (the default mount of ~). */
  skipped?: (reason: string) => string;
}

export class BootRequirements {
  private readonly list: RequirementView[];
  /** performance.now() at which each waiting requirement started: its elapsedMs runs on while it waits. */
  private readonly waitingSince = new Map<number, number>();

  /** `total`: 4, or 5 with mounts. */
  constructor(
    total: number,
    private readonly log: Logger,
    private readonly announce: (r: RequirementView) => void,
  ) {
    this.list = NAMES.slice(0, total).map((name, i) => ({
      index: i + 1,
      total,
      name,
      state: 'pending',
      detail: null,
      elapsedMs: 0,
    }));
  }

  views(): RequirementView[] {
    const now = performance.now();
    return this.list.map((r) => {
      const since = r.state === 'waiting' ? this.waitingSince.get(r.index) : undefined;
      return since === undefined ? { ...r } : { ...r, elapsedMs: Math.round(now - since) };
    });
  }

  stateOf(index: number): RequirementView['state'] | undefined {
    return this.list[index - 1]?.state;
  }

  /** Shown without a log line (a requirement skipped by configuration, a waiting one's new detail). */
  show(index: number, state: RequirementView['state'], detail: string | null, elapsedMs?: number): void {
    const r = this.list[index - 1];
    r.state = state;
    r.detail = detail;
    if (elapsedMs !== undefined) r.elapsedMs = Math.round(elapsedMs);
    this.announce({ ...r });
  }

  ok(index: number, detail: string | null, elapsedMs?: number): void {
    const r = this.list[index - 1];
    this.show(index, 'ok', detail, elapsedMs);
    this.log.info(
      { detail, requirement: index, state: 'ok' },
      `requirement ${index} of ${r.total} ok: ${r.name}${detail ? ` (${detail})` : ''}`,
    );
  }

  failed(index: number, reason: string, elapsedMs?: number): void {
    const r = this.list[index - 1];
    this.show(index, 'failed', reason, elapsedMs);
    this.log.error(
      { detail: reason, requirement: index, state: 'failed' },
      `requirement ${index} of ${r.total} failed: ${r.name}: ${reason}`,
    );
  }

  skipped(index: number, detail: string, elapsedMs?: number): void {
    const r = this.list[index - 1];
    this.show(index, 'skipped', detail, elapsedMs);
    this.log.warn(
      { requirement: index, state: 'skipped' },
      `requirement ${index} of ${r.total} skipped: ${r.name}: ${detail}`,
    );
  }

  /**
   * Runs one requirement's check; `note` updates what the waiting requirement shows (e.g. the last failure). Rejects
   * with "requirement N of M (name) failed: why" when the check does.
   */
  async run(
    index: number,
    check: (note: (detail: string) => void) => Promise<string | null>,
    opts: RunOptions = {},
  ): Promise<void> {
    const r = this.list[index - 1];
    const started = performance.now();
    this.waitingSince.set(index, started);
    this.show(index, 'waiting', null, 0);
    this.log.info(`waiting for requirement ${index} of ${r.total}: ${r.name}`);
    const note = (detail: string) => {
      if (r.state === 'waiting' && r.detail !== detail)
        this.show(index, 'waiting', detail, performance.now() - started);
    };
    try {
      this.ok(index, await check(note), performance.now() - started);
    } catch (err) {
      const reason = opts.reason?.(err as Error) ?? (err as Error).message;
      if (opts.skipped) this.skipped(index, opts.skipped(reason), performance.now() - started);
      else this.failed(index, reason, performance.now() - started);
      throw new Error(`requirement ${index} of ${r.total} (${r.name}) failed: ${reason}`);
    }
  }
}
