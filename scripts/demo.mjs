#!/usr/bin/env node
// `npm run demo`: tether's main job on the testbed, narrated. Brings up a network-namespace "VM" with its own sshd
// (scripts/testbed.sh), runs `tether up` against it (the guest agent is provisioned over SSH), starts a web server
// in the guest, waits for `tether forward ls` to show it, fetches the page from the host through the forward, shows a
// host directory mounted in the guest over SFTP (read and written from inside the guest), prints `tether status`,
// then `tether down` and tears the testbed down (unless --keep). Without sshfs on this machine the mount is skipped.
// Needs root (network namespaces) and a build (`npm run build`, which `npm run demo` does first).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'host/dist/cli/main.js');
const TESTBED = join(ROOT, 'scripts/testbed.sh');
const NAME = 'demo';
const keep = process.argv.includes('--keep');

// Bold on a terminal only: piped into a file or a CI log, the escapes would be noise.
const [bold, plain] = process.stdout.isTTY ? ['\x1b[1m', '\x1b[0m'] : ['', ''];
const say = (msg) => process.stdout.write(`\n${bold}==> ${msg}${plain}\n`);
const fail = (msg) => {
  process.stderr.write(`demo: ${msg}\n`);
  process.exit(1);
};

if (process.platform !== 'linux' || process.getuid?.() !== 0)
  fail('the demo needs root on Linux: its "VM" is a network namespace with its own sshd (try: sudo npm run demo)');
if (!existsSync(CLI)) fail(`${CLI} is missing: run \`npm run build\` first`);
if (!existsSync(join(ROOT, 'build/guest/manifest.json')))
  fail('build/guest is missing: run `npm run build:guest` first');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Runs a command with output shown; returns its stdout too. Fails the demo on a non-zero exit unless allowed. */
function run(cmd, args, { env, show = true, allowFail = false } = {}) {
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (show && r.stdout) process.stdout.write(r.stdout);
  if (r.stderr) process.stderr.write(r.stderr);
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
  return r.stdout ?? '';
}

async function until(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const home = mkdtempSync(join(tmpdir(), 'tether-demo-home-'));
const env = { TETHER_HOME: home };
const tether = (...args) => run(process.execPath, [CLI, ...args], { env });
let web = null;
let testbed = null;

async function main() {
  const sshPort = await freePort();
  say(`Starting the testbed VM "${NAME}": a network namespace with its own sshd, reachable at 127.0.0.1:${sshPort}`);
  testbed = JSON.parse(
    run(TESTBED, ['up', NAME, String(sshPort)], { show: false })
      .trim()
      .split('\n')
      .pop(),
  );
  console.log(`    ssh ${testbed.user}@127.0.0.1:${sshPort} (key ${testbed.identityFile})`);

  // The testbed shares the host's filesystem (only the network is its own), so the host directory is mounted at a
  // path of its own in the guest rather than at the same path, as it would be in a real VM.
  const share = sshfsInstalled()
    ? { location: join(home, 'project'), mountPoint: join(testbed.guestDir, 'project') }
    : null;
  if (share) {
    mkdirSync(share.location);
    writeFileSync(join(share.location, 'notes.txt'), 'Written on the host.\n');
  } else {
    say(
      'sshfs is not installed here, so the demo skips mounting a host directory in the guest (apt-get install sshfs)',
    );
  }

  const config = join(home, 'demo.yaml');
  writeFileSync(
    config,
    [
      '# tether config for the demo testbed',
      'ssh:',
      '  host: 127.0.0.1',
      `  port: ${sshPort}`,
      `  user: ${testbed.user}`,
      `  identityFile: ${testbed.identityFile}`,
      '  useAgent: false',
      'guestAgent:',
      `  socket: ${join(testbed.guestDir, 'agent.sock')}`,
      `  installDir: ${join(testbed.guestDir, 'install')}`,
      ...(share
        ? ['mounts:', `  - location: ${share.location}`, `    mountPoint: ${share.mountPoint}`, '    writable: true']
        : ['mounts: []']),
      '',
    ].join('\n'),
  );

  say(`tether up ${NAME}: connect, pin the host key, provision the guest agent, start forwarding`);
  tether('up', NAME, '-c', config, '--timeout', '120');

  const port = await freePort();
  say(`Starting a web server in the guest: python3 -m http.server ${port} (as ${testbed.user}, inside the VM)`);
  const www = join(testbed.guestDir, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, 'index.html'), '<h1>Hello from inside the VM, served through tether</h1>\n');
  run('chown', ['-R', `${testbed.user}:`, www], { show: false });
  web = spawn(
    'nsenter',
    [
      `--net=${testbed.netns}`,
      'setpriv',
      '--reuid',
      testbed.user,
      '--regid',
      testbed.user,
      '--init-groups',
      '--',
      '/usr/bin/python3',
      '-m',
      'http.server',
      String(port),
      '--bind',
      '127.0.0.1',
      '--directory',
      www,
    ],
    { stdio: 'ignore' },
  );

  say('Waiting for tether to notice the new guest listener (tether forward ls --json)');
  const started = Date.now();
  await until(`guest port ${port} in forward ls`, async () => {
    const out = run(process.execPath, [CLI, 'forward', 'ls', NAME, '--json'], { env, show: false });
    return JSON.parse(out).find((f) => f.guestAddr === `127.0.0.1:${port}` && f.state === 'forwarding');
  });
  console.log(`    forwarded after ${((Date.now() - started) / 1000).toFixed(1)}s`);
  tether('forward', 'ls', NAME);

  say(`Fetching http://127.0.0.1:${port}/ on the host — the request travels through the SSH forward into the VM`);
  const res = await fetch(`http://127.0.0.1:${port}/`);
  const body = await res.text();
  console.log(`    HTTP ${res.status}: ${body.trim()}`);
  if (!body.includes('Hello from inside the VM')) throw new Error('the page did not come from the guest');

  if (share) await showMount(share);

  say(`tether status ${NAME}`);
  tether('status', NAME);
}

function sshfsInstalled() {
  return spawnSync('sh', ['-c', 'command -v sshfs'], { stdio: 'ignore' }).status === 0;
}

/** Runs a shell command in the guest as its SSH user, the way a user of a real VM would: over ssh. */
function inGuest(command) {
  const { sshPort, user, identityFile, knownHostsFile } = testbed;
  const opts = ['-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHostsFile}`, '-o', 'LogLevel=ERROR'];
  return run('ssh', [...opts, '-i', identityFile, '-p', String(sshPort), `${user}@127.0.0.1`, command], {
    show: false,
  });
}

async function showMount({ location, mountPoint }) {
  say(`The host directory ${location} is mounted in the guest at ${mountPoint} (tether mount ls)`);
  tether('mount', 'ls', NAME);
  const fs = inGuest(`findmnt -n -o FSTYPE --target ${mountPoint}`).trim();
  console.log(
    `    in the guest: findmnt says ${mountPoint} is ${fs} (sshfs, served by tether's SFTP server on the host)`,
  );
  if (fs !== 'fuse.sshfs') throw new Error(`${mountPoint} is not an sshfs mount in the guest (${fs || 'not mounted'})`);

  say('Reading a host file in the guest, and writing one back from the guest');
  const notes = inGuest(`cat ${join(mountPoint, 'notes.txt')}`).trim();
  console.log(`    guest$ cat ${join(mountPoint, 'notes.txt')}\n    ${notes}`);
  if (notes !== 'Written on the host.') throw new Error(`the guest read ${JSON.stringify(notes)} from the mount`);
  inGuest(`echo 'Written in the guest.' > ${join(mountPoint, 'reply.txt')}`);
  const reply = readFileSync(join(location, 'reply.txt'), 'utf8').trim();
  console.log(`    host$ cat ${join(location, 'reply.txt')}\n    ${reply}`);
  if (reply !== 'Written in the guest.') throw new Error(`the host read ${JSON.stringify(reply)} back`);
}

/** The pid of the guest agent that provisioning started in the background (no systemd in the testbed), or null. */
function guestAgentPid() {
  try {
    const pid = Number(readFileSync(join(testbed.guestDir, 'install', 'agent.pid'), 'utf8'));
    return pid > 0 ? pid : null;
  } catch {
    return null; // not started
  }
}

async function cleanup() {
  const webRuns = web && web.exitCode === null;
  if (keep && testbed) {
    // The web server, the guest agent, the host agent and the testbed stay for poking at; the line below ends them.
    web?.unref();
    const pids = [webRuns ? web.pid : null, guestAgentPid()].filter(Boolean).join(' ');
    say(`--keep: leaving it running. Try: TETHER_HOME=${home} node ${CLI} forward ls ${NAME}`);
    console.log(
      `    stop it with: TETHER_HOME=${home} node ${CLI} down ${NAME}; ${pids ? `kill ${pids}; ` : ''}` +
        `${TESTBED} down ${NAME}; rm -rf ${home}`,
    );
    return;
  }
  if (webRuns) web.kill('SIGTERM');
  say(`tether down ${NAME}`);
  if (existsSync(join(home, NAME, 'tether.yaml'))) run(process.execPath, [CLI, 'down', NAME], { env, allowFail: true });
  const agentPid = testbed && guestAgentPid();
  if (agentPid) process.kill(agentPid, 'SIGTERM');
  say('Tearing the testbed down');
  run(TESTBED, ['down', NAME], { allowFail: true });
  rmSync(home, { recursive: true, force: true });
}

let code = 0;
try {
  await main();
  say(
    'Demo finished: a guest port appeared on the host by itself and served a page' +
      (sshfsInstalled() ? ', and a host directory was read and written from inside the guest.' : '.'),
  );
} catch (err) {
  process.stderr.write(`\ndemo failed: ${err.message}\n`);
  if (existsSync(join(home, NAME))) process.stderr.write(`agent log: ${join(home, NAME, 'logs', 'current.log')}\n`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
