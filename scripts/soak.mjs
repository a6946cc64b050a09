#!/usr/bin/env node
// `npm run soak` (not in CI): a long run of churn against the testbed with one host agent in this process, then a
// leak report. Churn: guest listeners opening and closing, connections through whatever is forwarded, file writes
// on a writable mount from the guest (checked on the host), and one guest sshd restart every 5 minutes (once at
// the midpoint when the run is shorter). Prints periodic samples (fds, host listeners, forwards, memory, SSH state)
// and, at the end, what did not return to its baseline; exits 1 on a leak.
// Env: SOAK_MINUTES (30), SOAK_SAMPLE_S (15), SOAK_SSHD_EVERY_S (300), SOAK_NAME and SOAK_PORT (the testbed's name
// and host port; default a fresh name and a free port). Needs root and a build (`npm run build`).
import { spawn, spawnSync } from 'node:child_process';
import {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TESTBED = join(ROOT, 'scripts/testbed.sh');
const MINUTES = Number(process.env.SOAK_MINUTES ?? 30);
const SAMPLE_MS = Number(process.env.SOAK_SAMPLE_S ?? 15) * 1000;
const SSHD_EVERY_MS = Number(process.env.SOAK_SSHD_EVERY_S ?? 300) * 1000;
/** Guest listeners churn within [BASE, BASE + RANGE). */
const RANGE = 100;
const MiB = 1 << 20;

if (process.platform !== 'linux' || process.getuid?.() !== 0) {
  console.error('soak: needs root on Linux (the testbed is a network namespace with its own sshd)');
  process.exit(2);
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

const { runAgent } = await import(join(ROOT, 'host/dist/agent/index.js'));
const { Config } = await import(join(ROOT, 'host/dist/config/schema.js'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}`);

function testbed(...args) {
  const r = spawnSync(TESTBED, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`testbed.sh ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function loginIds(user) {
  const f = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((x) => x[0] === user);
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
}

/** Starts a node script in the guest namespace as the login user. */
function guestNode(tb, source, args) {
  const file = join(tb.guestDir, `soak-${args[0]}.cjs`);
  writeFileSync(file, source);
  const { uid, gid, home } = loginIds(tb.user);
  const child = spawn(
    'nsenter',
    [`--net=${tb.netns}`, 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', 'node', file, ...args],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HOME: home } },
  );
  return child;
}

/** Toggles random echo listeners in [base, base + range) every 100 ms. */
const LISTENER_CHURN = `
const net = require('net');
const [, base, range] = process.argv.slice(2).map(Number);
const open = new Map();
setInterval(() => {
  const port = base + Math.floor(Math.random() * range);
  const s = open.get(port);
  if (s) { s.close(); open.delete(port); return; }
  const srv = net.createServer((c) => { c.on('error', () => {}); c.pipe(c); });
  srv.on('error', () => open.delete(port));
  srv.listen(port, '127.0.0.1');
  open.set(port, srv);
}, 100);
`;

/** Writes files on the mount every 200 ms; prints "w <name> <content>" for the host to check. */
const MOUNT_WRITER = `
const fs = require('fs');
const [, dir] = process.argv.slice(2);
let n = 0, failed = 0;
setInterval(() => {
  const name = 'f' + (n % 20) + '.txt';
  const content = 'write ' + n++ + ' ' + Date.now();
  try { fs.writeFileSync(dir + '/' + name, content); console.log('w ' + name + ' ' + content); }
  catch (e) { failed++; console.log('e ' + e.code); }
}, 200);
`;

function roundTrip(port, data) {
  return new Promise((resolve) => {
    let got = '';
    const s = net.connect({ host: '127.0.0.1', port }, () => s.end(data));
    s.setTimeout(5_000, () => s.destroy(new Error('timeout')));
    s.on('data', (d) => {
      got += d;
    });
    s.on('end', () => resolve(got === data));
    s.on('error', () => resolve(false));
  });
}

/** TCP LISTEN sockets owned by this process (its fds matched against /proc/net/tcp{,6} inodes). */
function ownListeners() {
  const inodes = new Set();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9])) n++;
    }
  }
  return n;
}

function sample(agent) {
  const mem = process.memoryUsage();
  const forwards = agent.forwards();
  return {
    fds: readdirSync('/proc/self/fd').length,
    hostListeners: ownListeners(),
    forwards: forwards.length,
    forwarding: forwards.filter((f) => f.state === 'forwarding').length,
    connections: forwards.reduce((n, f) => n + f.connections, 0),
    rssMiB: +(mem.rss / MiB).toFixed(1),
    heapMiB: +(mem.heapUsed / MiB).toFixed(1),
    ssh: agent.ssh.state,
    reconnects: agent.ssh.reconnects,
  };
}

async function main() {
  const name = process.env.SOAK_NAME ?? `soak${process.pid.toString(36)}`;
  const tb = JSON.parse(
    testbed('up', name, String(process.env.SOAK_PORT ?? (await freePort())))
      .trim()
      .split('\n')
      .pop(),
  );
  const cleanups = [() => testbed('down', name)];
  const children = [];
  let agent;
  try {
    const location = mkdtempSync(join(tmpdir(), 'tether-soak-export-'));
    cleanups.unshift(() => rmSync(location, { recursive: true, force: true }));
    const mountPoint = join(tb.stateDir, 'soak-mnt');
    mkdirSync(mountPoint, { recursive: true });
    const { uid, gid } = loginIds(tb.user);
    chownSync(mountPoint, uid, gid);
    chownSync(location, uid, gid); // the guest user writes through sshfs as the host's file owner
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-soak-'));
    cleanups.unshift(() => rmSync(instanceDir, { recursive: true, force: true }));
    const config = Config.parse({
      ssh: {
        host: '127.0.0.1',
        port: tb.sshPort,
        user: tb.user,
        identityFile: tb.identityFile,
        useAgent: false,
        keepaliveInterval: 2,
        keepaliveCountMax: 3,
      },
      guestAgent: { socket: join(tb.guestDir, 'agent.sock'), installDir: join(tb.guestDir, 'install') },
      mounts: [{ location, mountPoint, writable: true, inotify: false }],
    });
    log(`testbed ${name} at 127.0.0.1:${tb.sshPort}; agent log ${instanceDir}/logs/current.log`);
    const run = await runAgent('soak', config, {
      instanceDir,
      requirementTimeoutMs: 90_000,
      ssh: { backoffInitialMs: 100, backoffMaxMs: 2_000 },
    });
    agent = run.agent;
    await run.ready;
    cleanups.unshift(async () => {
      const pid = agent.link.info?.pid;
      await agent.stop('soak finished');
      if (pid) spawnSync('kill', ['-TERM', String(pid)]);
    });
    gc();
    const baseline = sample(agent);
    log(`baseline ${JSON.stringify(baseline)}`);

    const base = 20_000 + Math.floor(Math.random() * 10_000);
    const churn = guestNode(tb, LISTENER_CHURN, ['listeners', String(base), String(RANGE)]);
    children.push(churn);
    churn.stdout.resume();
    const writer = guestNode(tb, MOUNT_WRITER, ['writer', mountPoint]);
    children.push(writer);
    const counts = { trips: 0, tripFails: 0, writes: 0, writeErrors: 0, checked: 0, mismatched: 0, sshdRestarts: 0 };
    let lastWrite = null;
    let buf = '';
    writer.stdout.setEncoding('utf8').on('data', (d) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop();
      for (const l of lines) {
        if (l.startsWith('w ')) {
          counts.writes++;
          const [, file, ...rest] = l.split(' ');
          lastWrite = { file, content: rest.join(' ') };
        } else if (l.startsWith('e ')) {
          counts.writeErrors++;
          if (counts.writeErrors === 1) log(`first mount write error in the guest: ${l.slice(2)}`);
        }
      }
    });

    const endAt = Date.now() + MINUTES * 60_000;
    const restartAt = [];
    for (let t = SSHD_EVERY_MS; t < MINUTES * 60_000; t += SSHD_EVERY_MS) restartAt.push(Date.now() + t);
    if (restartAt.length === 0) restartAt.push(Date.now() + (MINUTES * 60_000) / 2);
    let nextSample = Date.now() + SAMPLE_MS;
    const warmAt = Date.now() + 60_000;
    let warm = null;
    while (Date.now() < endAt) {
      const live = agent
        .forwards()
        .filter((f) => f.state === 'forwarding')
        .map((f) => Number(f.guestAddr.split(':').at(-1)))
        .filter((p) => p >= base && p < base + RANGE);
      const picks = live.sort(() => Math.random() - 0.5).slice(0, 5);
      const results = await Promise.all(picks.map((p) => roundTrip(p, `soak ${p} ${counts.trips}`)));
      counts.trips += results.length;
      // A listener may close between the pick and the connect: failures are counted, not fatal.
      counts.tripFails += results.filter((ok) => !ok).length;
      if (lastWrite) {
        const { file, content } = lastWrite;
        lastWrite = null;
        try {
          // A later write may have replaced it: only a content of a different format is a mismatch.
          const onHost = readFileSync(join(location, file), 'utf8');
          counts.checked++;
          if (!/^write \d+ \d+$/.test(onHost) && onHost !== content) counts.mismatched++;
        } catch {
          counts.mismatched++;
        }
      }
      if (restartAt.length && Date.now() >= restartAt[0]) {
        restartAt.shift();
        log('restarting the guest sshd');
        testbed('stop-sshd', name);
        testbed('start-sshd', name);
        counts.sshdRestarts++;
      }
      if (Date.now() >= nextSample) {
        nextSample += SAMPLE_MS;
        // The first sample after a minute of churn, collected: what the agent needs while busy, warm.
        if (!warm && Date.now() >= warmAt) {
          gc();
          warm = sample(agent);
        }
        log(`${JSON.stringify(sample(agent))} ${JSON.stringify(counts)}`);
      }
      await sleep(100);
    }

    log('churn over; stopping guest churn and waiting for the forwards to go');
    for (const c of children) c.kill('SIGTERM');
    const settleBy = Date.now() + 30_000;
    const inRange = () =>
      agent.forwards().filter((f) => {
        const p = Number(f.guestAddr.split(':').at(-1));
        return p >= base && p < base + RANGE;
      }).length;
    while (inRange() > 0 && Date.now() < settleBy) await sleep(200);
    while (agent.ssh.state !== 'connected' && Date.now() < settleBy) await sleep(200);
    await sleep(2_000); // closed sockets and timers settle before the final sample
    gc();
    const end = sample(agent);
    log(`final ${JSON.stringify(end)} ${JSON.stringify(counts)}`);
    const leaks = [];
    if (end.fds > baseline.fds + 10) leaks.push(`fds ${baseline.fds} → ${end.fds}`);
    if (end.hostListeners > baseline.hostListeners)
      leaks.push(`host listeners ${baseline.hostListeners} → ${end.hostListeners}`);
    if (inRange() > 0) leaks.push(`${inRange()} forwards of closed guest listeners remain`);
    if (end.connections > 0) leaks.push(`${end.connections} connections still counted`);
    if (end.heapMiB > baseline.heapMiB + 50) leaks.push(`heap ${baseline.heapMiB} → ${end.heapMiB} MiB`);
    // Idle at the end, the heap must not be above what it was while busy after the first minute: anything that
    // piled up across the run shows here (10 MiB over 30 minutes is a third of a MiB a minute).
    if (warm && end.heapMiB > warm.heapMiB + 10)
      leaks.push(`heap ${warm.heapMiB} MiB busy at minute 1 → ${end.heapMiB} idle at the end`);
    if (counts.mismatched > 0) leaks.push(`${counts.mismatched} mount writes not seen on the host`);
    // Writes may fail while sshd restarts (the mount is remounted); most must succeed.
    if (counts.writes < counts.writeErrors * 10)
      leaks.push(`mount writes: ${counts.writes} ok, ${counts.writeErrors} failed`);
    if (counts.trips === 0 || counts.tripFails * 10 > counts.trips)
      leaks.push(`round trips: ${counts.trips}, ${counts.tripFails} failed`);
    if (counts.sshdRestarts > 0 && end.reconnects < counts.sshdRestarts)
      leaks.push(`only ${end.reconnects} reconnects for ${counts.sshdRestarts} sshd restarts`);
    console.log(
      `\nsoak ${MINUTES} min: rss ${baseline.rssMiB} → ${end.rssMiB} MiB, heap ${baseline.heapMiB} → ${end.heapMiB} MiB, fds ${baseline.fds} → ${end.fds}, host listeners ${baseline.hostListeners} → ${end.hostListeners}`,
    );
    console.log(
      `  ${counts.trips} round trips (${counts.tripFails} failed during churn), ${counts.writes} mount writes (${counts.writeErrors} errors, ${counts.checked} checked on the host), ${counts.sshdRestarts} sshd restarts, ${end.reconnects} reconnects`,
    );
    console.log(leaks.length ? `LEAKS:\n  ${leaks.join('\n  ')}` : 'no leaks');
    process.exitCode = leaks.length ? 1 : 0;
  } finally {
    for (const c of children) c.kill('SIGKILL');
    for (const fn of cleanups) {
      try {
        await fn();
      } catch (err) {
        console.error(`soak cleanup: ${err.message}`);
      }
    }
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    console.error(`soak: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
