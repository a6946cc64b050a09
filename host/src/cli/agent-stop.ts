// Stopping a VM's host agent from the CLI (`down`, `rm --force`, a failed `up`): asks it through the control API,
// waits for its process to exit and removes ha.sock/ha.pid; when the API does not answer, SIGTERMs the recorded pid
// (only if it is a tether agent), and SIGKILLs what is still running after 20 s.
import { existsSync } from 'node:fs';
import { AgentNotRunningError } from '../control/client.js';
import { type InstancePaths, isAlive, isOurAgent, readPid, removeRuntimeFiles } from '../instance.js';
import { socketAnswers } from '../socket-file.js';
import { clientFor } from './context.js';

const STOP_TIMEOUT_MS = 20_000;

async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Stops the instance's agent; says how (`shut down`, `SIGTERM`, `SIGKILL`, `not running`). */
export async function stopAgent(paths: InstancePaths, reason?: string): Promise<string> {
  const pid = readPid(paths);
  let how = 'shut down';
  try {
    await clientFor(paths, 5_000).shutdown(reason);
  } catch (err) {
    if (!(err instanceof AgentNotRunningError) && !(pid && isOurAgent(pid, paths) === true)) throw err;
    if (!pid || !isAlive(pid) || isOurAgent(pid, paths) !== true) {
      removeRuntimeFiles(paths);
      return 'not running';
    }
    process.kill(pid, 'SIGTERM');
    // A stopped agent (SIGSTOP, a suspended terminal job) acts on the SIGTERM only once it runs again.
    process.kill(pid, 'SIGCONT');
    // No socket yet: an agent `up` has just started, still loading.
    how = existsSync(paths.socket) ? 'SIGTERM: the control API did not answer' : 'SIGTERM: it was still starting';
  }
  if (!pid) {
    // No pid file (removed by hand): the socket going quiet is the best sign left.
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while ((await socketAnswers(paths.socket)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  } else if (!(await waitExit(pid, STOP_TIMEOUT_MS))) {
    process.kill(pid, 'SIGKILL');
    await waitExit(pid, 5_000);
    how = `SIGKILL: still running ${STOP_TIMEOUT_MS / 1000}s after ${how}`;
  }
  removeRuntimeFiles(paths);
  return how;
}
