// Wakes the port poller when the kernel moves a TCP socket into or out of LISTEN, so a new listener is scanned for
// within milliseconds instead of at the next tick. Owns a private ftrace instance (tracefs `instances/tether-guest-PID`)
// that records only the `sock:inet_sock_set_state` tracepoint, filtered to LISTEN transitions, and a blocking read of
// its trace_pipe on one libuv pool thread. What the events say is not parsed: any event means "scan soon", and the
// scan decides (the tracepoint fires for every network namespace, the scan reads ours).
//
// Why: ticks are paced on their CPU cost, and on a slow guest (an emulated CPU, where a tick costs milliseconds) that
// stretched the tick interval, and so detection, to a second. Needs root and a mounted tracefs (systemd mounts it at
// /sys/kernel/tracing); without either the ticks alone find listeners, as before. UDP has no such tracepoint.

import { closeSync, mkdirSync, openSync, read, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { unescapeMountPath } from '../mount-table.js';

/** Something that tells the poller a listener may have come or gone; the poller then scans soon (PortPoller.wake). */
export interface ScanTrigger {
  start(wake: () => void): void;
  stop(): void;
}

const EVENT = join('events', 'sock', 'inet_sock_set_state');
/** TCP_LISTEN in the kernel's tcp_states.h: a socket starting or stopping to listen. */
const FILTER = 'newstate == 10 || oldstate == 10';
const INSTANCE_PREFIX = 'tether-guest-';
/** Per-CPU ring buffer of the instance; an event takes well under 100 bytes, and any one read is enough to wake. */
const BUFFER_KB = 8;
/** The protocol's cap on the detail (LIMITS.reasonBytes), in characters: error texts are ASCII. */
const DETAIL_MAX = 512;
const FALLBACK_ROOTS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

export interface ListenEventsOptions {
  /** tracefs mount points to try, instead of those the mount table lists (tracefsRoots). */
  roots?: readonly string[];
  /** Read to find where tracefs is mounted. */
  mountsFile?: string;
  log?: Logger;
}

/** Whether events arrive, and from which tracefs, or why not (shown by `tether status` and `doctor`). */
export interface ListenEventsState {
  on: boolean;
  detail: string;
}

export class ListenEvents implements ScanTrigger {
  private readonly roots: readonly string[] | undefined;
  private readonly mountsFile: string;
  private readonly log: Logger | undefined;
  private instance: string | null = null;
  /** The tracefs mount the instance was made under. */
  private tracefs = '';
  private fd = -1;
  private stopping = false;
  private wake: () => void = () => {};
  private readonly buf = Buffer.allocUnsafe(4096);
  private status: ListenEventsState = { on: false, detail: 'not started' };
  private count = 0;

  constructor(options: ListenEventsOptions = {}) {
    this.roots = options.roots;
    this.mountsFile = options.mountsFile ?? '/proc/self/mounts';
    this.log = options.log;
  }

  get state(): ListenEventsState {
    return this.status;
  }

  /** Events read so far (lines of trace_pipe). */
  get events(): number {
    return this.count;
  }

  start(wake: () => void): void {
    this.wake = wake;
    if (this.instance) {
      // Started again before the last stop's read ended: that read goes on.
      if (this.stopping) this.resume();
      return;
    }
    this.stopping = false;
    const errors: string[] = [];
    for (const root of this.roots ?? tracefsRoots(this.mountsFile)) {
      try {
        this.open(root);
        this.status = on(root);
        this.log?.info({ tracefs: root, instance: this.instance }, 'listen events on');
        this.pump();
        return;
      } catch (err) {
        errors.push(`${root}: ${(err as Error).message}`);
        this.release();
      }
    }
    const why = errors.length > 0 ? errors.join('; ') : 'no tracefs mounted';
    this.status = { on: false, detail: why.slice(0, DETAIL_MAX) };
    this.log?.info({ reason: why }, 'listen events unavailable; ticks alone detect listeners');
  }

  stop(): void {
    if (!this.instance || this.stopping) return;
    this.stopping = true;
    this.endRead();
    this.status = { on: false, detail: 'stopped' };
  }

  /**
   * Ends the pending read of trace_pipe: it returns only when the instance's buffer has something, so a marker is
   * written there (the read's callback then releases the instance). Also run at process exit: Node's exit waits for
   * its pool threads, and one blocked in that read would hold the process until some socket somewhere listens.
   */
  private readonly endRead = (): void => {
    const instance = this.instance;
    if (!instance) return;
    try {
      writeFileSync(join(instance, EVENT, 'enable'), '0');
    } catch (err) {
      this.log?.warn({ instance, err }, 'could not turn the listen event off');
    }
    try {
      writeFileSync(join(instance, 'trace_marker'), 'tether-guest stopping');
    } catch (err) {
      this.log?.warn({ instance, err }, 'could not end the listen-event read; it ends with the next listen event');
    }
  };

  private open(root: string): void {
    this.tracefs = root;
    const instances = join(root, 'instances');
    removeStale(instances);
    const instance = join(instances, `${INSTANCE_PREFIX}${process.pid}`);
    // One of ours by this pid is from an earlier start in this process, or an agent of an earlier boot that got the
    // same pid (tracefs keeps instances until reboot, and a VM's boot order makes pids repeat).
    removeInstance(instance);
    mkdirSync(instance);
    this.instance = instance;
    writeFileSync(join(instance, 'buffer_size_kb'), String(BUFFER_KB));
    writeFileSync(join(instance, EVENT, 'filter'), FILTER);
    writeFileSync(join(instance, EVENT, 'enable'), '1');
    this.fd = openSync(join(instance, 'trace_pipe'), 'r');
    process.once('exit', this.endRead);
  }

  private resume(): void {
    const instance = this.instance as string;
    try {
      writeFileSync(join(instance, EVENT, 'enable'), '1');
      this.stopping = false;
      this.status = on(this.tracefs);
    } catch (err) {
      this.log?.warn({ instance, err }, 'could not resume listen events; ticks alone detect listeners');
    }
  }

  private pump(): void {
    read(this.fd, this.buf, 0, this.buf.length, null, (err, n) => {
      if (this.stopping) return this.release();
      if (err || n === 0) {
        const reason = err ? err.message : 'trace_pipe ended';
        this.status = { on: false, detail: `read failed: ${reason}`.slice(0, DETAIL_MAX) };
        this.log?.warn({ instance: this.instance, reason }, 'listen events stopped; ticks alone detect listeners');
        return this.release();
      }
      for (let i = 0; i < n; i++) if (this.buf[i] === 0x0a) this.count++;
      this.wake();
      this.pump();
    });
  }

  private release(): void {
    process.off('exit', this.endRead);
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    if (this.instance) removeInstance(this.instance);
    this.instance = null;
  }
}

function on(tracefs: string): ListenEventsState {
  return { on: true, detail: `tracefs ${tracefs}`.slice(0, DETAIL_MAX) };
}

/** Mount points of tracefs, from the mount table, then the usual places (debugfs mounts it on first access). */
export function tracefsRoots(mountsFile: string): string[] {
  const roots: string[] = [];
  try {
    for (const line of readFileSync(mountsFile, 'utf8').split('\n')) {
      const [, mountPoint, type] = line.split(' ');
      if (type === 'tracefs' && mountPoint) roots.push(unescapeMountPath(mountPoint));
    }
  } catch {
    // no mount table to read: try the usual places
  }
  for (const root of FALLBACK_ROOTS) if (!roots.includes(root) && hasInstances(root)) roots.push(root);
  return roots;
}

function hasInstances(root: string): boolean {
  try {
    readdirSync(join(root, 'instances'));
    return true;
  } catch {
    return false;
  }
}

/** Instances left by an agent that did not stop cleanly (killed, or a crash): their pid no longer runs. */
function removeStale(instances: string): void {
  for (const name of readdirSync(instances)) {
    if (!name.startsWith(INSTANCE_PREFIX)) continue;
    const pid = Number(name.slice(INSTANCE_PREFIX.length));
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || alive(pid)) continue;
    removeInstance(join(instances, name));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function removeInstance(instance: string): void {
  try {
    rmdirSync(instance);
  } catch {
    // still open elsewhere, or gone: the next start tries again
  }
}
