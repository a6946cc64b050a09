// Runs one tether host agent (the built host/dist) in its own process for the forwarding benchmark, so its memory
// can be read from /proc/<pid>/status without the benchmark's own heap in it. Prints JSON lines on stdout:
//   {"event":"ready","guestAgentPid":N} or {"event":"failed","error":"..."} once the boot requirements settle;
//   {"event":"delta","t":<epoch ms>,"added":[ports]} when a port delta with new listeners arrives over the link;
//   {"event":"info",...} answering an `info` line on stdin (the guest agent's current info, e.g. its scan interval,
//   and with BENCH_MEM_PEAKS=1 memPeaks: the agent's highest process.memoryUsage() readings in MiB).
// SIGTERM stops the agent and exits.
//
//   node forward-agent.mjs NAME INSTANCE_DIR CONFIG_JSON
// TETHER_BENCH_SSH_NODELAY=1 sets TCP_NODELAY on the SSH connection (an experiment knob for the benchmark).
import { createInterface } from 'node:readline';
import { runAgent } from '../../host/dist/agent/run.js';
import { Config } from '../../host/dist/config/schema.js';

const [name, instanceDir, configJson] = process.argv.slice(2);
const { agent, ready } = await runAgent(name, Config.parse(JSON.parse(configJson)), { instanceDir });
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const now = () => performance.timeOrigin + performance.now();

if (process.env.TETHER_BENCH_SSH_NODELAY === '1') agent.ssh.on('connected', (client) => client.setNoDelay(true));
agent.link.on('delta', (delta) => {
  if (delta.added.length) say({ event: 'delta', t: now(), added: delta.added.map((l) => l.port) });
});

// With BENCH_MEM_PEAKS=1, the highest reading of each process.memoryUsage() field (MiB), sampled every 10 ms: what
// the RSS peak is made of. Off by default: the sampling costs the measured agent CPU.
const memPeaks = {};
if (process.env.BENCH_MEM_PEAKS === '1') {
  setInterval(() => {
    for (const [k, v] of Object.entries(process.memoryUsage())) memPeaks[k] = Math.max(memPeaks[k] ?? 0, v / 2 ** 20);
  }, 10).unref();
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line.trim() !== 'info') return;
  try {
    say({ event: 'info', memPeaks, ...(await agent.link.peer.request('info', {})) });
  } catch (err) {
    say({ event: 'info', memPeaks, error: err.message });
  }
});

let stopping = false;
process.on('SIGTERM', async () => {
  if (stopping) return;
  stopping = true;
  await agent.stop('benchmark finished');
  process.exit(0);
});

try {
  await ready;
  say({ event: 'ready', guestAgentPid: agent.link.info?.pid ?? null });
} catch (err) {
  say({ event: 'failed', error: err.message });
}
