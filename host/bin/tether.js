#!/usr/bin/env node
// The `tether` command as npm installs it (node_modules/.bin/tether, or on PATH with `npm link -w host`): the built
// CLI in dist/, which exists once `npm run build` has run. This file is committed so npm can link it at install time.
try {
  await import('../dist/cli/main.js');
} catch (err) {
  // Only the build itself missing; a dependency missing from an existing build is its own error.
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.url).endsWith('/dist/cli/main.js')) throw err;
  process.stderr.write('tether: not built yet: run `npm run build` in the tether checkout\n');
  process.exit(1);
}
