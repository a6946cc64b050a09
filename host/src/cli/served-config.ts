// The config a running agent serves, against the tether.yaml on disk: the agent reads the file once, at its start,
// so an edit applies only after `tether down && tether up`. up, status and doctor say so instead of mixing the two.
import { statSync } from 'node:fs';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { InstancePaths } from '../instance.js';
import { clientFor } from './context.js';

/** The running agent's config; null when no agent answers. */
export function servedConfig(paths: InstancePaths): Promise<LoadedConfig | null> {
  return clientFor(paths, 5_000)
    .config()
    .catch(() => null);
}

export function sameConfig(a: LoadedConfig, b: LoadedConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * What to say of tether.yaml when it was written after the agent started (`startedAt`) and says something else than
 * the config the agent runs with: that the edit applies after a restart, or, for a file that does not load, that it
 * must be fixed first (a restart would fail on it). Null when there is nothing to say. An agent that cannot say what
 * it runs with counts as changed: it may well differ.
 */
export async function configEditNote(paths: InstancePaths, startedAt: string): Promise<string | null> {
  try {
    if (statSync(paths.config).mtimeMs <= Date.parse(startedAt)) return null;
  } catch {
    return null; // no file: `rm` is under way, nothing to apply
  }
  const served = await servedConfig(paths);
  let onDisk: LoadedConfig;
  try {
    onDisk = loadConfig(paths.config);
  } catch (err) {
    const problem = (err as Error).message.split('\n').join('; ');
    return `${paths.config} changed since the agent started and does not load: ${problem}; the agent runs on with the config it started with (fix the file before \`tether down ${paths.name} && tether up ${paths.name}\`)`;
  }
  return served === null || !sameConfig(onDisk, served) ? applyHint(paths) : null;
}

/** What to do about an edit the running agent has not applied. */
export function applyHint(paths: InstancePaths): string {
  return `${paths.config} changed since the agent started; it applies after \`tether down ${paths.name} && tether up ${paths.name}\``;
}
