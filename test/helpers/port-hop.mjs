// Run inside the testbed guest: a server that hops ports (closes one and listens on the next in the same turn of the
// event loop, so no scan can fall between) while a PortPoller watches, with full scans pushed out of reach (every
// 10 minutes after the first): only the per-tick checks can see a hop. Prints one JSON line per hop with the ms until
// the poller listed the new port, or null when it did not within the deadline.
// Usage: node port-hop.mjs FIRST_PORT HOPS DEADLINE_MS
import { createServer } from 'node:net';
import { PortPoller } from '../../guest/dist/ports/index.js';

const [first, hops, deadlineMs] = process.argv.slice(2).map(Number);
const poller = new PortPoller({ excludeSelf: false, minFullScanMs: 600_000, maxFullScanMs: 600_000 });
const listed = (port) => poller.snapshot().listeners.some((l) => l.proto === 'tcp' && l.port === port);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(port) {
  const start = performance.now();
  while (performance.now() - start < deadlineMs) {
    if (listed(port)) return performance.now() - start;
    await sleep(5);
  }
  return null;
}

let server = createServer().listen(first, '127.0.0.1');
poller.start();
const initial = await until(first);
if (initial === null) throw new Error(`the first port ${first} was never listed`);
await sleep(300); // a few ticks in the steady state: the counters settle
for (let i = 1; i <= hops; i++) {
  const port = first + i;
  server.close();
  server = createServer().listen(port, '127.0.0.1'); // binds synchronously: same turn as the close
  const ms = await until(port);
  console.log(JSON.stringify({ port, ms }));
  if (ms === null) break;
  await sleep(200);
}
poller.stop();
server.close();
