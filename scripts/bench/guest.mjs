#!/usr/bin/env node
// Guest agent benchmark: runs the built guest agent bundle (build/guest/tether-guest.cjs) inside a testbed guest
// (scripts/testbed.sh, a network namespace), subscribes to its port events over its unix socket the way the host
// agent does, and measures
//   - detection latency: a TCP listener opened in the guest → its `ports.delta` event received here (p50/p95);
//   - agent CPU over an idle window with 0, 1,000 and 50,000 established loopback connections in the guest
//     (utime+stime from /proc/<pid>/stat), and the detection latency again at 50,000;
//   - the detection latency of an agent that also follows the kernel's listen events (tracefs; the figures above are
//     of an agent run with --no-listen-events, ticks alone). Without a mounted tracefs the bench mounts one of its own.
// There is no external anchor for these figures: the table prints each goal beside it.
//
//   npm run build:guest && node scripts/bench/guest.mjs        (root; BENCH_QUICK=1 for a short run)
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Peer } from '@tether/protocol';
import { fmt, percentile } from './stats.mjs';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const bundle = join(repo, 'build/guest/tether-guest.cjs');
const testbedScript = join(repo, 'scripts/testbed.sh');
const TB = 'benchguest';

const quick = process.env.BENCH_QUICK === '1';
const TRIALS = quick ? 30 : 120;
const IDLE_S = quick ? 10 : 60;
const LOADS = [0, 1_000, 50_000];
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ── processes this bench starts (stopped by pid at the end) ─────────────────────────────────────────────────────

const children = new Set();

function startInGuest(netns, argv, name) {
  // nsenter without --fork execs the program: the child's pid is the program's own.
  const child = spawn('nsenter', [`--net=${netns}`, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  child.describe = () => `${name} (pid ${child.pid}) ${stderr.trim() ? `stderr: ${stderr.trim()}` : ''}`;
  return child;
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const exited = once(child, 'exit');
  if ((await Promise.race([exited.then(() => true), sleep(5000).then(() => false)])) === false) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Line-oriented request/answer with a helper process: writes a command, resolves with its next stdout line. */
function lineChannel(child) {
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    async next(timeoutMs = 120_000) {
      const timer = sleep(timeoutMs).then(() => ({ timeout: true }));
      const r = await Promise.race([lines.next(), timer]);
      if (r.timeout) throw new Error(`no answer within ${timeoutMs} ms from ${child.describe()}`);
      if (r.done) throw new Error(`${child.describe()} exited`);
      return r.value;
    },
    async ask(line, timeoutMs) {
      child.stdin.write(`${line}\n`);
      return this.next(timeoutMs);
    },
  };
}

// ── testbed ─────────────────────────────────────────────────────────────────────────────────────────────────────

async function freePort() {
  const s = createServer();
  s.listen({ host: '127.0.0.1', port: 0 });
  await once(s, 'listening');
  const { port } = s.address();
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function testbedDown() {
  try {
    execFileSync(testbedScript, ['down', TB], { stdio: 'ignore' });
  } catch {}
}

async function testbedUp() {
  testbedDown(); // a testbed left behind by an interrupted run
  const out = execFileSync(testbedScript, ['up', TB, String(await freePort())], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1));
}

// ── guest helpers (plain Node scripts run inside the namespace) ─────────────────────────────────────────────────

// `open` → listens on a new 127.0.0.1 port, answers "<port> <time listening began, ms since epoch>".
// `close PORT` → closes it, answers "closed".
const LISTENER_HELPER = `
const net = require('node:net');
const servers = new Map();
const now = () => performance.timeOrigin + performance.now();
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ');
  if (cmd === 'open') {
    const s = net.createServer();
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const t = now();
      servers.set(s.address().port, s);
      console.log(s.address().port + ' ' + t);
    });
  } else if (cmd === 'close') {
    const s = servers.get(Number(arg));
    servers.delete(Number(arg));
    if (s) s.close(() => console.log('closed')); else console.log('closed');
  }
});
console.log('ready');
`;

// Holds N established loopback connections (client and server ends both in this process), spread over two server
// ports; answers "ready N" once every one is accepted. Several of these share a large N (see holdConnections).
const CONNECTIONS_HELPER = `
const net = require('node:net');
const total = Number(process.argv[1]);
const BATCH = 500;
let accepted = 0;
const held = [];
function serve() {
  return new Promise((resolve) => {
    const s = net.createServer((sock) => { held.push(sock); accepted++; });
    s.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => resolve(s.address().port));
  });
}
(async () => {
  const ports = [await serve(), await serve()];
  for (let done = 0; done < total; ) {
    const n = Math.min(BATCH, total - done);
    await Promise.all(Array.from({ length: n }, (_, i) => new Promise((resolve, reject) => {
      const c = net.connect({ host: '127.0.0.1', port: ports[(done + i) % 2] }, () => resolve());
      c.on('error', reject);
      held.push(c);
    })));
    done += n;
  }
  while (accepted < total) await new Promise((r) => setTimeout(r, 20));
  console.log('ready ' + accepted);
})().catch((e) => { console.error(e.message); process.exit(1); });
`;

async function startListener(tb) {
  const child = startInGuest(tb.netns, [process.execPath, '-e', LISTENER_HELPER], 'listener helper');
  const channel = lineChannel(child);
  if ((await channel.next()) !== 'ready') throw new Error(`${child.describe()} did not start`);
  return Object.assign(channel, { child });
}

// ── the agent ───────────────────────────────────────────────────────────────────────────────────────────────────

async function startAgent(tb, extraArgs = []) {
  const socketPath = join(tb.guestDir, 'agent.sock');
  rmSync(socketPath, { force: true }); // left by an earlier run: existence must mean this agent is listening
  const argv = [process.execPath, bundle, 'run', '--socket', socketPath, ...extraArgs];
  const agent = startInGuest(tb.netns, argv, 'guest agent');
  agent.stdout.resume(); // JSON logs: not needed here, but must not fill the pipe
  const deadline = Date.now() + 20_000;
  while (!existsSync(socketPath)) {
    if (agent.exitCode !== null) throw new Error(`${agent.describe()} exited with ${agent.exitCode}`);
    if (Date.now() > deadline) throw new Error(`the guest agent did not create ${socketPath} within 20 s`);
    await sleep(20);
  }
  const stream = connect(socketPath);
  await once(stream, 'connect');
  const peer = new Peer(stream, { agent: 'tether-bench/0.1.0' });
  await peer.ready;
  // Arrival time of each port's latest `added` and `removed` event: an event may arrive before the helper has told
  // us which port it opened.
  const seen = { added: new Map(), removed: new Map() };
  let wake = () => {};
  peer.onEvent('ports.delta', (delta) => {
    const at = now();
    for (const l of delta.added) seen.added.set(l.port, at);
    for (const l of delta.removed) seen.removed.set(l.port, at);
    wake();
  });
  await peer.request('ports.subscribe', {});
  return {
    pid: agent.pid,
    peer,
    child: agent,
    /** Resolves with the arrival time of the event that `port` was added (or removed); consumes it. */
    async waitFor(kind, port, timeoutMs = 15_000) {
      const deadline = now() + timeoutMs;
      while (!seen[kind].has(port)) {
        if (now() > deadline) throw new Error(`no ports.delta with port ${port} ${kind} within ${timeoutMs} ms`);
        await Promise.race([new Promise((resolve) => (wake = resolve)), sleep(100)]);
      }
      const at = seen[kind].get(port);
      seen[kind].delete(port);
      return at;
    },
  };
}

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

// ── measurements ────────────────────────────────────────────────────────────────────────────────────────────────

async function detectionLatency(agent, listener, trials) {
  const samples = [];
  for (let i = 0; i < trials; i++) {
    // Each trial is one isolated port change, as in a real guest: a pause of several ticks lets the agent's pacing
    // forget the previous trial's reads (back-to-back trials are sustained churn, which it rightly paces slower), and
    // its random length puts the open at a random phase of the polling tick.
    await sleep(500 + Math.random() * 1000);
    const [port, listenedAt] = (await listener.ask('open')).split(' ').map(Number);
    if (!Number.isInteger(port) || !Number.isFinite(listenedAt))
      throw new Error('the listener helper answered garbage');
    samples.push((await agent.waitFor('added', port)) - listenedAt);
    await listener.ask(`close ${port}`);
    await agent.waitFor('removed', port);
  }
  return samples;
}

// A Node process that does nothing but wake every 100 ms (the agent's fastest tick): measured in the same window as
// the agent, it shows what waking up alone costs on this machine, which no scanner change can remove.
const BARE_TICKER = 'setInterval(() => {}, 100);';

/** % of one core used by the agent, and by a bare 10 Hz ticker in the same window. */
async function idleCpu(tb, agent, seconds) {
  const ticker = startInGuest(tb.netns, [process.execPath, '-e', BARE_TICKER], 'bare ticker');
  await sleep(1000); // past its start-up
  const t0 = now();
  const a0 = cpuSeconds(agent.pid);
  const b0 = cpuSeconds(ticker.pid);
  await sleep(seconds * 1000);
  const a1 = cpuSeconds(agent.pid);
  const b1 = cpuSeconds(ticker.pid);
  const elapsed = (now() - t0) / 1000;
  await stopChild(ticker);
  return { agent: ((a1 - a0) / elapsed) * 100, ticker: ((b1 - b0) / elapsed) * 100 };
}

/** The hard limit on open files this process may raise a child's soft limit to. */
function hardFileLimit() {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard === 'unlimited' ? 1_048_576 : Number(hard) || 1024;
}

/** Starts helpers holding `n` established connections in the guest; resolves with them once all are up. */
async function holdConnections(tb, n) {
  if (n === 0) return [];
  // Enough ephemeral ports for the clients; ip_local_port_range is per network namespace, so only the guest's changes.
  execFileSync('nsenter', [`--net=${tb.netns}`, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=10000 65000']);
  // Each connection costs a helper two fds; without CAP_SYS_RESOURCE the hard limit caps one process, so large
  // counts are spread over several helpers.
  const fds = hardFileLimit();
  const perHelper = Math.max(1, Math.floor((fds - 256) / 2));
  const helpers = [];
  for (let left = n; left > 0; left -= perHelper) {
    const m = Math.min(perHelper, left);
    const helper = startInGuest(
      tb.netns,
      ['prlimit', `--nofile=${fds}:${fds}`, '--', process.execPath, '-e', CONNECTIONS_HELPER, String(m)],
      `${m}-connection helper`,
    );
    helpers.push(helper);
    const ready = await lineChannel(helper).next(300_000);
    if (ready !== `ready ${m}`) throw new Error(`${helper.describe()} answered ${JSON.stringify(ready)}`);
  }
  return helpers;
}

/** Mounts a tracefs of the bench's own unless one is mounted; returns what undoes that. */
function ensureTracefs() {
  if (
    readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[2] === 'tracefs')
  )
    return () => {};
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-tracefs-'));
  execFileSync('mount', ['-t', 'tracefs', 'nodev', dir]);
  return () => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  };
}

function printTable(title, rows) {
  console.log(`\n## ${title}  (no external anchor; goals from issue 3)`);
  const header = ['metric', 'tether', 'bare 10 Hz ticker', 'goal', 'met'];
  const lines = rows.map((r) => [
    `${r.metric} (${r.unit})`,
    fmt(r.value, 2),
    r.reference === undefined ? '-' : fmt(r.reference, 2),
    r.goal === undefined ? '-' : `≤ ${r.goal}`,
    r.goal === undefined ? '' : r.value <= r.goal ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const row = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
  console.log(row(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(row(l));
}

// ── main ────────────────────────────────────────────────────────────────────────────────────────────────────────

async function main() {
  if (process.getuid?.() !== 0) throw new Error('the guest bench needs root (it starts a testbed network namespace)');
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run \`npm run build:guest\` first`);
  console.log(`guest agent bench${quick ? ' (BENCH_QUICK: short windows)' : ''}: ${TRIALS} trials, ${IDLE_S} s idle`);

  const tb = await testbedUp();
  const rows = [];
  const notes = [];
  try {
    const agent = await startAgent(tb, ['--no-listen-events']);
    let listener = await startListener(tb);
    const latency = await detectionLatency(agent, listener, TRIALS);
    const after = await agent.peer.request('info', {});
    notes.push(
      `detection trials: max ${fmt(Math.max(...latency))} ms; scan interval after them ${fmt(after.scanIntervalMs)} ms`,
    );
    rows.push({ metric: 'detection latency p50', unit: 'ms', value: percentile(latency, 50), goal: 100 });
    rows.push({ metric: 'detection latency p95', unit: 'ms', value: percentile(latency, 95), goal: 200 });

    for (const n of LOADS) {
      const helpers = await holdConnections(tb, n);
      await sleep(3000); // let the agent's pacing settle on the new load
      const cpu = await idleCpu(tb, agent, IDLE_S);
      const info = await agent.peer.request('info', {});
      rows.push({
        metric: `agent CPU idle, ${n.toLocaleString('en')} conns`,
        unit: '% core',
        value: cpu.agent,
        reference: cpu.ticker,
        goal: n <= 1000 ? 1 : 2,
      });
      notes.push(
        `${n} connections: scan interval ${fmt(info.scanIntervalMs)} ms, last scan ${info.lastScanMs.toFixed(3)} ms`,
      );
      if (n === LOADS.at(-1)) {
        // The listeners come from a process started after the connection holders, as a server started on a busy
        // guest would: the agent looks for a new listener's owner among the newest processes first.
        await stopChild(listener.child);
        listener = await startListener(tb);
        const loaded = await detectionLatency(agent, listener, TRIALS);
        const label = `detection latency at ${n.toLocaleString('en')} conns`;
        rows.push({ metric: `${label} p50`, unit: 'ms', value: percentile(loaded, 50) });
        rows.push({ metric: `${label} p95`, unit: 'ms', value: percentile(loaded, 95) });
      }
      for (const helper of helpers) await stopChild(helper);
    }
    agent.peer.close('bench done');
    await stopChild(agent.child);

    const unmount = ensureTracefs();
    try {
      const traced = await startAgent(tb);
      // The socket answers before the scanner (and its events) starts.
      let info = await traced.peer.request('info', {});
      for (let i = 0; i < 100 && info.listenEvents?.detail === 'not started'; i++) {
        await sleep(50);
        info = await traced.peer.request('info', {});
      }
      if (!info.listenEvents?.on)
        throw new Error(`the agent does not follow listen events: ${info.listenEvents?.detail}`);
      const latency = await detectionLatency(traced, listener, TRIALS);
      rows.push({ metric: 'detection with listen events p50', unit: 'ms', value: percentile(latency, 50), goal: 100 });
      rows.push({ metric: 'detection with listen events p95', unit: 'ms', value: percentile(latency, 95), goal: 200 });
      traced.peer.close('bench done');
      await stopChild(traced.child);
    } finally {
      unmount();
    }
    await stopChild(listener.child);
  } finally {
    for (const child of [...children]) await stopChild(child);
    testbedDown();
    printTable('guest agent', rows);
    for (const note of notes) console.log(`  ${note}`);
  }
}

main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`guest bench failed: ${err.message}`);
    for (const child of [...children]) await stopChild(child).catch(() => {});
    testbedDown();
    process.exit(1);
  },
);
