// Writes host/dist/build.json: a hash over the built host code (every file under host/dist but this one). A running
// host agent reports it in its status, so `tether up`, `status` and `doctor` can tell an agent started before tether
// was rebuilt or upgraded (it goes on running the old code until `tether down && tether up`).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../host/dist/', import.meta.url));
const out = join(dist, 'build.json');

function files(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]))
    .filter((f) => f !== out && !f.endsWith('.tsbuildinfo'));
}

const hash = createHash('sha256');
for (const f of files(dist).sort()) hash.update(relative(dist, f)).update('\0').update(readFileSync(f)).update('\0');
const build = hash.digest('hex').slice(0, 16);
writeFileSync(out, `${JSON.stringify({ build })}\n`);
console.log(`tether host build ${build} → ${relative(process.cwd(), out)}`);
