// The host's version: what `tether --version` prints and the name the host agent gives in its hello to the guest;
// and the build of the host code running (scripts/build-host-id.mjs), which tells an agent started before tether was
// rebuilt or upgraded from the CLI that talks to it.
import { readFileSync } from 'node:fs';

export const VERSION = '0.1.0';

/** The `agent` string of the host's hello, e.g. `tether/0.1.0`. */
export const HOST_AGENT_NAME = `tether/${VERSION}`;

let build: string | null | undefined;

/** The hash of the built host code this process runs; null when it runs from sources (tests). */
export function hostBuild(): string | null {
  if (build === undefined) {
    try {
      build = (JSON.parse(readFileSync(new URL('./build.json', import.meta.url), 'utf8')) as { build: string }).build;
    } catch {
      build = null;
    }
  }
  return build;
}

/**
 * Why a running agent reporting build `running` is not the code this process would start, or null when it is (or
 * either build is unknown): it was started before tether was rebuilt or upgraded, and runs the old code until
 * restarted. `running` is the `build` of the agent's status: undefined when the status has no such key, i.e. the
 * agent's tether is older than build reporting (null is an agent run from sources, whose build is unknown).
 */
export function otherBuild(running: string | null | undefined, mine = hostBuild()): string | null {
  if (running === null || !mine || running === mine) return null;
  if (running === undefined)
    return `the agent runs an older tether than this command (${mine}), from before agents reported their build: it was started before tether was upgraded`;
  return `the agent runs another build of tether (${running}) than this command (${mine}): it was started before tether was rebuilt or upgraded`;
}
