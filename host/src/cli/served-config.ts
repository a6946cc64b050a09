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
 * Whether tether.yaml was written after the agent started (`startedAt`) and says something else than the config it
 * runs with. A file that does not load, or an agent that cannot say, counts as changed: it may well differ.
 */
export async function editedSinceStart(paths: InstancePaths, startedAt: string): Promise<boolean> {
  try {
    if (statSync(paths.config).mtimeMs <= Date.parse(startedAt)) return false;
  } catch {
    return false; // no file: `rm` is under way, nothing to apply
  }
  const served = await servedConfig(paths);
  try {
    return served === null || !sameConfig(loadConfig(paths.config), served);
  } catch {
    return true;
  }
}

/** What to do about an edit the running agent has not applied. */
export function applyHint(paths: InstancePaths): string {
  return `${paths.config} changed since the agent started; it applies after \`tether down ${paths.name} && tether up ${paths.name}\``;
}
