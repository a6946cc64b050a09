// How `tether up` starts a VM's host agent in the background: a detached Node process running agent-main.js (not
// the whole command tree) with V8 flags sized for a long-lived, allocation-heavy proxy. Owns the command line of
// that process; what the process does is agent-main.ts and agent-process.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { InstancePaths } from '../instance.js';

/**
 * V8 flags of the background agent. Forwarding allocates a stream of short-lived buffers and packet objects;
 * V8's default young generation (16 MiB semi-spaces on 64-bit, of which several MiB stay resident once touched)
 * was the largest single item of the agent's RSS and grew with every busy stream. With 1 MiB semi-spaces
 * scavenges run more often but each is cheap, as almost everything a forward allocates is dead by then.
 * The old-space cap is a ceiling well above what 5,000 connections and 1,000 forwards need, so a leak ends in a
 * clear out-of-memory exit instead of swapping the host. Flags given to the CLI's own node (`node --inspect
 * tether up`) come after these and win.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=512'];

/** The node arguments of the background agent for instance `name`. */
export function agentArgv(name: string, logLevel?: string): string[] {
  const entry = fileURLToPath(new URL('./agent-main.js', import.meta.url));
  const args = [...AGENT_NODE_FLAGS, ...process.execArgv, entry, name];
  if (logLevel) args.push('--log-level', logLevel);
  return args;
}

/** Starts the agent detached, its stdout/stderr appended to the instance's stdio log; the caller does not wait. */
export function spawnAgent(paths: InstancePaths, logLevel?: string): ChildProcess {
  const out = openSync(paths.stdioLog, 'a', 0o600);
  try {
    const child = spawn(process.execPath, agentArgv(paths.name, logLevel), {
      detached: true,
      stdio: ['ignore', out, out],
      env: process.env,
    });
    child.unref();
    return child;
  } finally {
    closeSync(out);
  }
}
