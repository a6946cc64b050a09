#!/usr/bin/env node
// npm run bench: runs each benchmark in turn (they need root for the testbed) and prints their tables.
// Pass names to run a subset: `npm run bench -- forward mount`.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const all = ['guest', 'forward', 'mount'];
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const selected = wanted.length ? wanted : all;

if (process.getuid?.() !== 0) {
  console.error('npm run bench needs root: it starts a testbed guest (network namespace + sshd).');
  process.exit(1);
}

let failed = 0;
for (const name of selected) {
  console.log(`\n# bench: ${name}`);
  const r = spawnSync(process.execPath, [join(here, `${name}.mjs`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench ${name} failed (exit ${r.status})`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
