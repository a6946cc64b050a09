// The guest agent build the host ships (build/guest): its manifest (version, hash, files) and which file suits a
// guest (the JS bundle when the guest has Node ≥ 20, else the single executable for its architecture), and whether a
// running agent is that build.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Info } from '@tether/protocol';

export interface GuestManifest {
  version: string;
  hash: string;
  dir: string;
  /** File name per artefact (`bundle`, `linux-x64`, `linux-arm64`), as listed in manifest.json. */
  files: Partial<Record<'bundle' | GuestArch, string>>;
}

export type GuestArch = 'linux-x64' | 'linux-arm64';

export const BUNDLE_FILE = 'tether-guest.cjs';

export function seaFile(arch: GuestArch): string {
  return `tether-guest-${arch}`;
}

/** build/guest of this checkout (host/dist/provision → ../../../build/guest; the same from host/src/provision). */
export function defaultBundleDir(): string {
  return process.env.TETHER_GUEST_BUILD ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../../build/guest');
}

export function readManifest(bundleDir: string): GuestManifest {
  const file = join(bundleDir, 'manifest.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(
      `guest agent build missing or unreadable at ${file} (${(err as Error).message}); run \`npm run build:guest\``,
    );
  }
  const { version, hash, files } = (raw ?? {}) as { version?: unknown; hash?: unknown; files?: unknown };
  if (typeof version !== 'string' || typeof hash !== 'string' || hash.length === 0)
    throw new Error(`${file}: expected {version: string, hash: string, files}`);
  const listed = files !== null && typeof files === 'object' ? (files as GuestManifest['files']) : {};
  return { version, hash, dir: bundleDir, files: listed };
}

/** `uname -m` → the build's architecture name, or null when tether ships no executable for it. */
export function archOf(unameM: string): GuestArch | null {
  const m = unameM.trim();
  if (m === 'x86_64' || m === 'amd64') return 'linux-x64';
  if (m === 'aarch64' || m === 'arm64') return 'linux-arm64';
  return null;
}

/**
 * `node -v` output → whether it is Node 20 or newer, which is all the bundle needs (esbuild target node20; it loads
 * `node:sea`, new in 20.12 / 21.7, only when asked and only to tell whether it is the single executable).
 */
export function nodeUsable(nodeV: string): boolean {
  const m = /^v(\d+)\./.exec(nodeV.trim());
  return m !== null && Number(m[1]) >= 20;
}

/** The local file to upload for a guest; throws when the build lacks it. */
export function artefactPath(manifest: GuestManifest, kind: 'bundle' | GuestArch): string {
  const name = manifest.files[kind] ?? (kind === 'bundle' ? BUNDLE_FILE : seaFile(kind));
  const path = join(manifest.dir, name);
  if (!existsSync(path)) throw new Error(`guest agent build lacks ${path}; run \`npm run build:guest\``);
  return path;
}

/**
 * Why the running agent is not the build in `bundleDir` (an upgrade of tether on the host leaves the old one running
 * in the guest), or null when it is, or when there is no build here to compare with (provisioning says so itself).
 */
export function outdatedAgent(info: Info, build: string | null, bundleDir: string): string | null {
  let manifest: { version: string; hash: string };
  try {
    manifest = readManifest(bundleDir);
  } catch {
    return null;
  }
  if (build === manifest.hash) return null;
  return (
    `the guest agent ${info.version} (build ${build ?? 'not reported'}) is not the one this host ships, ` +
    `${manifest.version} (build ${manifest.hash})`
  );
}
