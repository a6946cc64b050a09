// `tether up` boot progress, like `limactl start`: one line when a requirement starts waiting, one when it is met
// (or skipped, or failed), with the elapsed time. BootProgress turns requirement updates into lines (pure);
// followBoot feeds it from the control API (event stream plus a status poll, so a missed event cannot hang `up`).

import { AgentNotRunningError, type ControlClient } from '../control/client.js';
import type { RequirementView, StatusView } from '../model.js';

export class BootProgress {
  private readonly latest = new Map<number, RequirementView>();
  /** What was printed per requirement: `waiting` (with its detail) or final. */
  private readonly printed = new Map<number, { state: string; detail: string | null }>();
  private readonly start: number;
  /** The last time printed: a line back-dated to when its requirement began never shows an earlier time. */
  private lastMs = 0;

  constructor(start = Date.now()) {
    this.start = start;
  }

  /**
   * Takes these requirements as already shown: `up` of a running instance prints what changes now (a mount tried
   * again), not a replay of its boot, whose lines would claim what may no longer hold (SSH reachable).
   */
  seed(reqs: RequirementView[]): void {
    for (const r of reqs) {
      if (r.state === 'waiting' || r.state === 'pending') continue;
      this.latest.set(r.index, r);
      this.printed.set(r.index, { state: r.state, detail: r.detail });
    }
  }

  /**
   * Lines to print after these (possibly repeated, possibly out of order) requirement views. Lines come in
   * requirement order: nothing is printed for requirement k until 1..k-1 are known to be met.
   */
  update(reqs: RequirementView[], now = Date.now()): string[] {
    for (const r of reqs) this.latest.set(r.index, r);
    const lines: string[] = [];
    const total = reqs[0]?.total ?? this.latest.values().next().value?.total ?? 0;
    for (let index = 1; index <= total; index++) {
      const r = this.latest.get(index);
      if (!r || r.state === 'pending') break;
      const label = `requirement ${r.index} of ${r.total}: ${r.name}`;
      const prev = this.printed.get(index);
      const final = r.state !== 'waiting';
      if (prev && prev.state !== 'waiting') continue; // already printed as met/failed/skipped
      if (!final) {
        // A waiting requirement whose detail changes (e.g. "connection refused, retrying") is worth a line.
        if (!prev || prev.detail !== r.detail)
          lines.push(`${this.stamp(now - this.start)} waiting for ${label}${r.detail ? ` (${r.detail})` : ''}`);
        this.printed.set(index, { state: 'waiting', detail: r.detail });
        break;
      }
      if (!prev && r.state !== 'skipped')
        lines.push(`${this.stamp(now - this.start - r.elapsedMs)} waiting for ${label}`);
      if (r.state === 'ok')
        lines.push(`✓ ${label} (${(r.elapsedMs / 1000).toFixed(1)}s)${r.detail ? ` ${r.detail}` : ''}`);
      else if (r.state === 'skipped') lines.push(`- ${label} (skipped${r.detail ? `: ${r.detail}` : ''})`);
      else lines.push(`✗ ${label}: ${r.detail ?? 'failed'}`);
      this.printed.set(index, { state: r.state, detail: r.detail });
      if (r.state === 'failed') break;
    }
    return lines;
  }

  /** `[ 12.3s] text`: a line of its own (not a requirement's) on the same clock. */
  note(text: string, now = Date.now()): string {
    return `${this.stamp(now - this.start)} ${text}`;
  }

  private stamp(ms: number): string {
    this.lastMs = Math.max(this.lastMs, ms);
    return `[${(this.lastMs / 1000).toFixed(1).padStart(5)}s]`;
  }
}

export type BootOutcome =
  | { outcome: 'ready'; status: StatusView }
  | { outcome: 'failed'; status: StatusView; requirement: RequirementView | null }
  /** A requirement failed that the agent runs on without (a mount): it stays up, degraded, and keeps trying. */
  | { outcome: 'degraded'; status: StatusView; requirement: RequirementView }
  | { outcome: 'timeout'; status: StatusView | null; requirement: RequirementView | null }
  | { outcome: 'gone'; reason: string };

interface FollowOptions {
  timeoutMs: number;
  print: (line: string) => void;
  start?: number;
  pollMs?: number;
  /** Requirements already shown (BootProgress.seed). */
  shown?: RequirementView[];
}

/** What a boot came to by this status, or null while it is still under way. */
export function bootOutcome(s: StatusView): BootOutcome | null {
  const failed = s.requirements.find((r) => r.state === 'failed') ?? null;
  if (s.state === 'failed' || (failed && s.state === 'stopping'))
    return { outcome: 'failed', status: s, requirement: failed };
  // Until the agent leaves `starting` it has not said whether it goes on without the failed requirement.
  if (failed) return s.state === 'starting' ? null : { outcome: 'degraded', status: s, requirement: failed };
  // `degraded` with every requirement met: the link to the guest dropped since, and forwards are suspended until it
  // is back, so the VM is not ready yet (followBoot says what it waits for). A requirement tried again (mounts) is
  // awaited even by a ready agent.
  const waiting = s.requirements.some((r) => r.state === 'waiting');
  return s.state === 'ready' && !waiting ? { outcome: 'ready', status: s } : null;
}

/** Why the link to the guest agent is down, from a status. */
export function linkDownReason(s: StatusView): string {
  if (s.ssh.state !== 'connected') return `SSH is ${s.ssh.state}${s.ssh.lastError ? ` (${s.ssh.lastError})` : ''}`;
  const why = s.link?.lastError;
  // The link's last error may be the SSH drop itself, from before this connection: not why it is down now.
  if (why?.startsWith('ssh connection lost')) return 'SSH is connected again; the link to the guest agent is reopening';
  return `SSH is connected but the guest agent does not answer${why ? ` (${why})` : ''}`;
}

/** A changed reason for a link that is down is told at most this often (reconnect errors can alternate)... */
const LINK_NOTE_MIN_MS = 5_000;
/** ...and the same reason again after this long. */
const LINK_NOTE_REPEAT_MS = 30_000;

/**
 * Whether to say now that the link is down for `reason`, after `prev` was said (null: nothing yet): `waiting` for a
 * new reason, `still waiting` for the same one after a while, null to stay quiet.
 */
export function linkNoteVerb(
  prev: { reason: string; at: number } | null,
  reason: string,
  now: number,
): 'waiting' | 'still waiting' | null {
  if (!prev) return 'waiting';
  const since = now - prev.at;
  if (prev.reason !== reason) return since >= LINK_NOTE_MIN_MS ? 'waiting' : null;
  return since >= LINK_NOTE_REPEAT_MS ? 'still waiting' : null;
}

/** Follows the agent's requirements until it is ready, a requirement fails, the agent goes away, or time runs out. */
export function followBoot(client: ControlClient, opts: FollowOptions): Promise<BootOutcome> {
  const progress = new BootProgress(opts.start);
  if (opts.shown) progress.seed(opts.shown);
  const latest = new Map<number, RequirementView>();
  let last: StatusView | null = null;
  return new Promise<BootOutcome>((resolve) => {
    let done = false;
    const finish = (o: BootOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearInterval(poll);
      sub.close();
      resolve(o);
    };
    const show = (reqs: RequirementView[]) => {
      for (const r of reqs) latest.set(r.index, r);
      for (const line of progress.update(reqs)) opts.print(line);
    };
    // What was last said about the link being down, and when: repeated while it stays down, so that a long wait
    // (a VM still booting, an sshd stopped) does not look like a hung terminal.
    let linkNote: { reason: string; at: number } | null = null;
    let mountsNoted = false;
    const onStatus = (s: StatusView) => {
      last = s;
      show(s.requirements);
      const o = bootOutcome(s);
      if (o) return finish(o);
      const now = Date.now();
      if (s.state === 'degraded' && s.link?.up === false) {
        const reason = linkDownReason(s);
        const verb = linkNoteVerb(linkNote, reason, now);
        if (verb) {
          opts.print(progress.note(`${verb} for the link to the guest agent: ${reason}`, now));
          linkNote = { reason, at: now };
        }
      } else if (s.state === 'degraded' && s.link?.up && s.mounts.mounted < s.mounts.total && !mountsNoted) {
        mountsNoted = true;
        opts.print(progress.note(`waiting for the mounts: ${s.mounts.mounted} of ${s.mounts.total} mounted`, now));
      }
    };
    const refresh = () =>
      client.status().then(onStatus, (err: Error) => {
        if (err instanceof AgentNotRunningError) finish({ outcome: 'gone', reason: err.message });
      });
    const sub = client.events(
      (e) => {
        if (e.type === 'requirement') show([e.requirement]);
        if (e.type === 'status' || (e.type === 'requirement' && e.requirement.state !== 'waiting')) void refresh();
      },
      () => {},
    );
    const deadline = setTimeout(() => {
      const waiting =
        [...latest.values()].sort((a, b) => a.index - b.index).find((r) => r.state !== 'ok' && r.state !== 'skipped') ??
        null;
      finish({ outcome: 'timeout', status: last, requirement: waiting });
    }, opts.timeoutMs);
    const poll = setInterval(refresh, opts.pollMs ?? 500);
    sub.opened.then(refresh, refresh);
  });
}
