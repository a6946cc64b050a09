// How `tether up` starts a VM's host agent in the background: a detached Node process running agent-main.js (not
// the whole command tree) with V8 flags sized for a long-lived, allocation-heavy proxy. Owns the command line of
// that process; what the process does is agent-main.ts and agent-process.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { InstancePaths } from '../instance.js';

/**
 * Node/V8 flags of the background agent (Linux x64 here: about 79 MiB idle and a 95-101 MiB peak with 4 busy
 * streams; Node's defaults gave about 80 MiB idle in an earlier measurement):
 * - `--max-semi-space-size=1`: V8's default young generation (16 MiB semi-spaces on 64-bit, resident once touched)
 *   was the largest single item of the idle agent's RSS. Forwarding's garbage is short-lived, so scavenges of a
 *   1 MiB semi-space stay cheap.
 * - `--expose-gc`: lets the buffer collector (agent/buffer-gc.ts) collect dead Buffers long before V8's own 64 MiB
 *   external-memory trigger.
 * - `--max-old-space-size=512`: a ceiling far above the agent's working heap (tens of MiB), so a leak ends the
 *   process with an out-of-memory error instead of growing without bound.
 * - `--single-threaded-gc`: no V8 helper threads for GC. The agent's heap is small, so collecting on the main thread
 *   is short, while waking helper threads for every scavenge cost more than the work they took over: measured here,
 *   3.5-3.8 instead of 4.7-4.8 CPU seconds per GiB forwarded, RSS no higher. Compilation keeps its background
 *   thread: with `--single-threaded` (no helper threads at all) each optimising compile, 0.3-4 ms, ran on the main
 *   thread and stalled whatever connection was in flight; about 45 of them fell into the first thousand echo
 *   connections after a warm-up. The thread costs about 8 MiB of RSS.
 * - `--interrupt-budget=8192` (V8's default is 67584): V8 optimises a function after it has run a fixed amount of
 *   bytecode, and the code run once per forwarded connection (accept, channel open, bridge, teardown) is small, so at
 *   the default it stayed unoptimised for the first 1,500-2,500 connections. An eighth of the budget optimises most
 *   of it within the first few hundred: per-connection CPU in the bench went from 2.4-2.7x to 1.7-1.9x OpenSSH's,
 *   and the echo latency p50 from 1.45-1.55x to 1.2-1.25x, for about 2 MiB more idle RSS (more optimised code).
 * Flags given to the CLI's own node (`node --inspect tether up`) come after these and win.
 */
export const AGENT_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=1',
  '--expose-gc',
  '--max-old-space-size=512',
  '--single-threaded-gc',
  '--interrupt-budget=8192',
];

/**
 * Environment defaults of the background agent (the user's own environment wins). glibc's malloc hands freed memory
 * back to the kernel as soon as 128 KiB sit free at the top of the heap; forwarding frees a burst of packet and read
 * buffers at every collection, so the next burst faulted every page in again: about 100 page faults per MiB
 * forwarded, a third of the agent's CPU per GiB on this machine's virtualised kernel. Keeping up to 32 MiB free at
 * the top, and taking buffers under 1 MiB from the heap rather than from mmap (a fixed trim threshold also fixes the
 * mmap threshold at 128 KiB), cut the faults tenfold and the CPU per GiB by about a fifth, with the RSS peak no
 * higher. Other C libraries ignore these variables.
 */
export const AGENT_ENV: Readonly<Record<string, string>> = {
  MALLOC_TRIM_THRESHOLD_: String(32 * 1024 * 1024),
  MALLOC_MMAP_THRESHOLD_: String(1024 * 1024),
};

interface AgentArgs {
  logLevel?: string;
  /** Deadline of each boot requirement, in seconds. */
  timeoutS?: number;
}

/** The node arguments of the background agent for instance `name`. */
function agentArgv(name: string, opts: AgentArgs = {}): string[] {
  const entry = fileURLToPath(new URL('./agent-main.js', import.meta.url));
  const args = [...AGENT_NODE_FLAGS, ...process.execArgv, entry, name];
  if (opts.logLevel) args.push('--log-level', opts.logLevel);
  if (opts.timeoutS) args.push('--timeout', String(opts.timeoutS));
  return args;
}

/**
 * Runs a command with its soft limit on open files raised to the hard limit (node has no setrlimit). Every forwarded
 * connection holds a file descriptor in the agent: processes start at 256 on macOS and at 1024 in many Linux
 * sessions, so a few hundred concurrent connections (a browser, a load test, `kubectl` watches) would have the agent
 * refuse the rest, its own control socket included. macOS refuses `unlimited` (its usual hard limit) as a soft one,
 * so finite values are tried after it; the limit is never lowered, and `exec` keeps the pid.
 */
export function withRaisedFileLimit(file: string, args: readonly string[]): [string, string[]] {
  const script = [
    's=$(ulimit -S -n)',
    'for n in "$(ulimit -H -n)" 1048576 65536 24576 10240; do',
    '  [ "$s" = unlimited ] && break',
    '  if [ "$n" = unlimited ] || [ "$n" -gt "$s" ]; then ulimit -S -n "$n" 2>/dev/null && break; fi',
    'done',
    'exec "$@"',
  ].join('\n');
  return ['/bin/sh', ['-c', script, 'tether-agent', file, ...args]];
}

/** The stdio log gains each start's warnings and crash stacks; past this size the next start moves it to `.1`. */
const STDIO_LOG_MAX = 1024 * 1024;

/** Starts the agent detached, its stdout/stderr appended to the instance's stdio log; the caller does not wait. */
export function spawnAgent(paths: InstancePaths, opts: AgentArgs = {}): ChildProcess {
  if ((statSync(paths.stdioLog, { throwIfNoEntry: false })?.size ?? 0) > STDIO_LOG_MAX)
    renameSync(paths.stdioLog, `${paths.stdioLog}.1`);
  const out = openSync(paths.stdioLog, 'a', 0o600);
  try {
    const child = spawn(...withRaisedFileLimit(process.execPath, agentArgv(paths.name, opts)), {
      detached: true,
      stdio: ['ignore', out, out],
      env: { ...AGENT_ENV, ...process.env },
    });
    child.unref();
    return child;
  } finally {
    closeSync(out);
  }
}
