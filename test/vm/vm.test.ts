// tether against a real QEMU VM (Debian 12, no Node.js, SSH on one forwarded loopback port), end to end through the
// CLI: `tether up` provisions the single-executable guest agent as a root systemd unit, a guest web server appears
// on the host's 127.0.0.1 and ::1 and goes away when stopped, a host directory is mounted writable and another
// read-only, the VM reboots and everything comes back by itself (the guest agent started by systemd, not
// re-provisioned), and `tether down` leaves nothing on the host while the guest agent keeps running in the VM.
// Prints the timings: image build, boot to SSH, `tether up` to ready, reboot to forwards back.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { ForwardView, MountView, StatusView } from '../../host/src/model.js';
import { cliBuilt, runCli } from '../helpers/cli-helpers.js';
import { freePort, waitFor } from '../helpers/wait.js';
import { buildImage, imageCacheDir, QemuVm, VM_USER, vmUnavailable } from './qemu-vm.js';

const NAME = 'vmtest';
const MIN = 60_000;
const RW_POINT = `/home/${VM_USER}/hostdir`;
/** Does not exist in the image: the mount requirement has to create it with sudo. */
const RO_POINT = '/mnt/tether-ro';
const AGENT_SOCKET = '/run/tether/agent.sock';

const unavailable = vmUnavailable();
const haveGuestBuild = existsSync(new URL('../../build/guest/tether-guest-linux-x64', import.meta.url));
if (unavailable) {
  if (process.env.CI === 'true') throw new Error(`the VM end-to-end test cannot run here: ${unavailable}`);
  console.warn(`skipping the VM end-to-end test: ${unavailable}`);
}
if (!haveGuestBuild) {
  const msg = 'build/guest/tether-guest-linux-x64 is missing (run `npm run build`)';
  if (process.env.CI === 'true') throw new Error(msg);
  console.warn(`skipping the VM end-to-end test: ${msg}`);
}

type ForwardEntry = Omit<ForwardView, 'id' | 'source'>;

interface LogLine {
  time: string;
  level: number;
  component?: string;
  msg: string;
  [key: string]: unknown;
}

const timings: [string, number][] = [];
/** Records and prints how long `label` took, from `startedMs` to `endedMs` (default now). */
function timed(label: string, startedMs: number, endedMs = Date.now()): void {
  const s = (endedMs - startedMs) / 1000;
  timings.push([label, s]);
  console.log(`[vm timing] ${label}: ${s.toFixed(1)} s`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** GET / on host:port; resolves with the status and body, rejects when the connection is refused or reset. */
async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, body: await res.text() };
}

async function refused(url: string): Promise<boolean> {
  try {
    await httpGet(url);
    return false;
  } catch {
    return true;
  }
}

/** Pids of host processes whose environment names this test's TETHER_HOME (the CLI and its detached agent). */
function processesUsingHome(home: string): number[] {
  const needle = `TETHER_HOME=${home}\0`;
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(needle)) out.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

describe.skipIf(unavailable !== null || !haveGuestBuild || !cliBuilt())('tether with a real QEMU VM', () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-vm-home-'));
  const hostRw = join(home, 'shared-rw');
  const hostRo = join(home, 'shared-ro');
  const cli = (...args: string[]) => runCli(home, args, 120_000);
  const logsDir = join(home, NAME, 'logs');
  let vm: QemuVm | null = null;
  /** After a failure the instance directory (logs) and the VM's serial log are kept for a look. */
  let failed = false;

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      failed = true;
    });
  });

  afterAll(async () => {
    try {
      if (existsSync(join(home, NAME, 'ha.sock'))) await cli('down', NAME);
    } finally {
      try {
        if (vm && failed) console.log(`[vm] serial console, last lines:\n${vm.serialTail()}`);
        await vm?.stop();
      } finally {
        if (failed) console.log(`[vm] a step failed: keeping ${home} (instance ${NAME}, its logs in ${logsDir})`);
        else rmSync(home, { recursive: true, force: true });
        if (timings.length)
          console.log(
            `[vm timing] summary\n${timings.map(([l, s]) => `  ${l.padEnd(44)} ${s.toFixed(1)} s`).join('\n')}`,
          );
      }
    }
  }, 3 * MIN);

  function theVm(): QemuVm {
    if (!vm) throw new Error('the VM did not start (see the first failed step)');
    return vm;
  }

  async function status(): Promise<StatusView> {
    const r = await cli('status', NAME, '--json');
    if (r.code !== 0) throw new Error(`tether status failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as StatusView;
  }

  async function forwards(): Promise<ForwardEntry[]> {
    const r = await cli('forward', 'ls', NAME, '--json');
    if (r.code !== 0) throw new Error(`tether forward ls failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as ForwardEntry[];
  }

  async function mounts(): Promise<MountView[]> {
    const r = await cli('mount', 'ls', NAME, '--json');
    if (r.code !== 0) throw new Error(`tether mount ls failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as MountView[];
  }

  function logLines(since = 0): LogLine[] {
    if (!existsSync(logsDir)) return [];
    const lines: LogLine[] = [];
    for (const f of readdirSync(logsDir).filter((n) => /^tether\..*\.log$/.test(n))) {
      for (const text of readFileSync(join(logsDir, f), 'utf8').split('\n')) {
        if (!text.trim()) continue;
        try {
          const line = JSON.parse(text) as LogLine;
          if (Date.parse(line.time) >= since) lines.push(line);
        } catch {
          // a line being written right now
        }
      }
    }
    return lines.sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
  }

  /** Starts `python3 -m http.server PORT` in the guest, detached from the ssh session; resolves with its pid. */
  async function startGuestServer(port: number): Promise<number> {
    const out = await theVm().sshOk(
      // Only python3 goes to the background, with every stdio redirected: sshd then ends the session at once.
      `cd /tmp; nohup python3 -m http.server ${port} --bind 0.0.0.0 >/tmp/http-${port}.log 2>&1 </dev/null & echo $!`,
    );
    const pid = Number(out);
    expect(pid).toBeGreaterThan(0);
    return pid;
  }

  async function waitForwarded(port: number, timeoutMs = 3 * MIN): Promise<ForwardEntry> {
    return waitFor(
      async () => (await forwards()).find((f) => f.guestAddr === `0.0.0.0:${port}` && f.state === 'forwarding') ?? null,
      { what: `forward ls to show the guest's 0.0.0.0:${port} forwarding`, timeoutMs, intervalMs: 1000 },
    );
  }

  async function expectServedOnBothLoopbacks(port: number): Promise<void> {
    for (const url of [`http://127.0.0.1:${port}/`, `http://[::1]:${port}/`]) {
      const res = await waitFor(() => httpGet(url), { what: `GET ${url}`, timeoutMs: MIN, intervalMs: 500 });
      expect(res.status, url).toBe(200);
      expect(res.body, url).toMatch(/Directory listing for \//);
    }
  }

  async function expectMountsWork(tag: string): Promise<void> {
    const v = theVm();
    const ms = await waitFor(
      async () => {
        const list = await mounts();
        return list.length === 2 && list.every((m) => m.state === 'mounted') ? list : null;
      },
      { what: 'both mounts to be mounted', timeoutMs: 3 * MIN, intervalMs: 1000 },
    );
    expect(ms.map((m) => [m.mountPoint, m.writable]).sort()).toEqual(
      [
        [RW_POINT, true],
        [RO_POINT, false],
      ].sort(),
    );

    // Read a host file in the guest, through both mounts.
    expect(await v.sshOk(`cat ${RW_POINT}/hello.txt`)).toBe('hello from the host');
    expect(await v.sshOk(`cat ${RO_POINT}/readme.txt`)).toBe('read-only export');

    // Write from the guest into the writable mount; the host sees the file.
    const name = `from-guest-${tag}.txt`;
    await v.sshOk(`echo 'written in the guest (${tag})' > ${RW_POINT}/${name} && sync`);
    await waitFor(() => existsSync(join(hostRw, name)), { what: `${name} on the host`, timeoutMs: MIN });
    expect(readFileSync(join(hostRw, name), 'utf8')).toBe(`written in the guest (${tag})\n`);

    // The read-only mount refuses writes and nothing reaches the host.
    const denied = await v.ssh(`echo nope > ${RO_POINT}/denied-${tag}.txt`);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Read-only file system|Permission denied/);
    expect(existsSync(join(hostRo, `denied-${tag}.txt`))).toBe(false);
  }

  it(
    'builds the image (cached) and boots a fresh VM',
    async () => {
      let started = Date.now();
      await buildImage();
      timed('image build (cached when unchanged)', started);

      const port = await freePort();
      started = Date.now();
      vm = await QemuVm.start(port, imageCacheDir(), 900);
      timed('boot to SSH', started);
      expect(await vm.bootId()).toMatch(/^[0-9a-f-]{36}$/);
    },
    45 * MIN,
  );

  it(
    'tether up provisions the guest (single executable, systemd unit as root) and mounts two host directories',
    async () => {
      const v = theVm();
      // The stock guest: no Node, no user_allow_other, no read-only mount point yet.
      expect((await v.ssh('command -v node')).code).not.toBe(0);
      expect((await v.ssh(`grep -Eq '^[[:space:]]*user_allow_other' /etc/fuse.conf`)).code).not.toBe(0);
      expect((await v.ssh(`test -e ${RO_POINT}`)).code).not.toBe(0);

      mkdirSync(hostRw);
      mkdirSync(hostRo);
      writeFileSync(join(hostRw, 'hello.txt'), 'hello from the host');
      writeFileSync(join(hostRo, 'readme.txt'), 'read-only export');
      const config = join(home, 'vmtest.yaml');
      writeFileSync(
        config,
        [
          'ssh:',
          '  user: placeholder # --ssh replaces it',
          '  useAgent: false',
          'mounts:',
          `  - location: ${hostRw}`,
          `    mountPoint: ${RW_POINT}`,
          '    writable: true',
          `  - location: ${hostRo}`,
          `    mountPoint: ${RO_POINT}`,
          '',
        ].join('\n'),
      );

      const started = Date.now();
      const r = await runCli(
        home,
        [
          'up',
          NAME,
          '--ssh',
          `${VM_USER}@127.0.0.1:${v.sshPort}`,
          '-i',
          v.identityFile,
          '-c',
          config,
          '--timeout',
          '900',
        ],
        16 * MIN,
      );
      timed('tether up to ready', started);
      expect(r.stderr).toBe('');
      expect(r.code, r.stdout).toBe(0);
      expect(r.stdout).toMatch(
        /✓ requirement 3 of 5: guest agent provisioned \(\d+\.\ds\) uploaded tether-guest-linux-x64/,
      );
      expect(r.stdout).toMatch(/installed the systemd unit/);
      expect(r.stdout).toMatch(/✓ requirement 5 of 5: mounts ready/);
      expect(r.stdout).toMatch(/✓ instance vmtest is ready/);

      // tether fixed the guest with sudo -n: user_allow_other added, the read-only mount point created.
      expect((await v.ssh(`grep -Eq '^[[:space:]]*user_allow_other' /etc/fuse.conf`)).code).toBe(0);
      expect(await v.sshOk(`stat -c %U ${RO_POINT}`)).toBe(VM_USER);
    },
    20 * MIN,
  );

  it(
    'the guest agent is the uploaded single executable, a root systemd unit with its socket owned by the SSH user',
    async () => {
      const v = theVm();
      expect((await v.ssh('command -v node')).code).not.toBe(0);
      const uploaded = logLines().filter((l) => l.msg === 'guest agent uploaded');
      expect(uploaded).toHaveLength(1);
      expect(uploaded[0].local).toMatch(/tether-guest-linux-x64$/);

      expect(await v.sshOk('systemctl is-active tether-guest')).toBe('active');
      expect(await v.sshOk('systemctl is-enabled tether-guest')).toBe('enabled');
      const s = await status();
      expect(s).toMatchObject({ name: NAME, state: 'ready', ssh: { state: 'connected' } });
      const pid = s.guest?.agentPid;
      expect(pid).toBeGreaterThan(0);
      expect(await v.sshOk('systemctl show tether-guest -p MainPID --value')).toBe(String(pid));
      expect(await v.sshOk(`ps -o user= -p ${pid}`)).toBe('root');
      // The unit runs the installed copy of the executable, not a Node bundle.
      expect(await v.sshOk(`sudo -n readlink /proc/${pid}/exe`)).toMatch(/\/tether-guest$/);
      // Stored once: the upload the unit was installed from is gone.
      expect((await v.ssh(`test -e '${uploaded[0].remote}'`)).code).not.toBe(0);
      expect(await v.sshOk('test -x /usr/local/lib/tether-guest/tether-guest && echo installed')).toBe('installed');
      expect(await v.sshOk(`stat -c '%U %a' ${AGENT_SOCKET}`)).toBe(`${VM_USER} 600`);
      // As root under systemd (which mounts tracefs), the kernel's listen events wake its scanner.
      expect(s.guest?.listenEvents).toEqual({ on: true, detail: expect.stringMatching(/^tracefs \//) });
      expect(await v.sshOk(`sudo -n ls /sys/kernel/tracing/instances`)).toContain(`tether-guest-${pid}`);
    },
    5 * MIN,
  );

  it(
    'a guest http.server appears in forward ls, is served on 127.0.0.1 and ::1, and goes away when stopped',
    async () => {
      const v = theVm();
      const port = await freePort();
      const pid = await startGuestServer(port);
      const started = Date.now();
      const entry = await waitForwarded(port);
      timed('guest listener to forwarded', started);
      expect(entry).toMatchObject({
        proto: 'tcp',
        hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
        error: null,
        process: { pid, command: expect.stringContaining('http.server') },
      });
      await expectServedOnBothLoopbacks(port);

      await v.sshOk(`kill ${pid}`);
      await waitFor(async () => !(await forwards()).some((f) => f.guestAddr === `0.0.0.0:${port}`), {
        what: `the forward of guest port ${port} to disappear`,
        timeoutMs: 2 * MIN,
        intervalMs: 1000,
      });
      for (const url of [`http://127.0.0.1:${port}/`, `http://[::1]:${port}/`])
        await waitFor(() => refused(url), { what: `${url} to refuse`, timeoutMs: MIN, intervalMs: 500 });
    },
    10 * MIN,
  );

  it(
    'the host directories are mounted: read, write, read-only refusal',
    async () => {
      await expectMountsWork('boot');
    },
    10 * MIN,
  );

  it(
    'after a reboot the link comes back by itself, the agent was started by systemd, forwards and mounts return',
    async () => {
      const v = theVm();
      const before = await status();
      const oldAgent = before.guest!;
      const oldBoot = await v.bootId();
      expect(oldBoot).not.toBeNull();
      // A forward that exists while the VM goes down, to see it suspended.
      const portA = await freePort();
      await startGuestServer(portA);
      await waitForwarded(portA);

      const rebootAt = Date.now();
      await v.requestReboot();

      // The link goes down and the forward is suspended at some point during the reboot.
      let linkDown = false;
      let suspended = false;
      await waitFor(
        async () => {
          const s = await status();
          if (s.ssh.state !== 'connected' || s.state === 'degraded') linkDown = true;
          const a = (await forwards()).find((f) => f.guestAddr === `0.0.0.0:${portA}`);
          if (a?.state === 'suspended') suspended = true;
          return linkDown && suspended;
        },
        { what: 'the link to go down and the forward to be suspended', timeoutMs: 5 * MIN, intervalMs: 500 },
      );
      timed('reboot to link down', rebootAt);
      await waitFor(async () => ((await v.bootId()) ?? oldBoot) !== oldBoot, {
        what: 'the rebooted guest to answer ssh with a new boot id',
        timeoutMs: 15 * MIN,
        intervalMs: 2000,
      });
      timed('reboot to guest SSH back', rebootAt);

      // Back by itself: connected and ready, talking to a guest agent of the new boot.
      const back = await waitFor(
        async () => {
          const s = await status();
          return s.state === 'ready' &&
            s.ssh.state === 'connected' &&
            s.guest &&
            s.guest.agentPid > 0 &&
            s.guest.agentStartedAt !== oldAgent.agentStartedAt
            ? s
            : null;
        },
        { what: 'tether to reconnect to the rebooted VM', timeoutMs: 15 * MIN, intervalMs: 1000 },
      );
      // When the SSH session came back, as the host agent recorded it (the poll above only notices it later).
      timed('reboot to tether reconnected', rebootAt, Date.parse(back.ssh.since));
      expect(back.ssh.reconnects).toBeGreaterThan(before.ssh.reconnects);
      const newBoot = await v.bootId();
      expect(newBoot).not.toBeNull();
      expect(newBoot).not.toBe(oldBoot);

      // The guest agent came from systemd at boot, and nothing was uploaded, installed or restarted again: on a slow
      // boot sshd is up before systemd starts the unit, and tether then waits for it instead of stepping in. Guest
      // times are converted through a measured clock offset (the guest's RTC has second resolution), taking the end
      // of the measured range that is least favourable to the assertion.
      const hostBefore = Date.now();
      const [guestNowNs, uptimeS, startMonoUs] = (
        await v.sshOk(
          'echo $(date +%s%N) $(cut -d" " -f1 /proc/uptime) $(systemctl show tether-guest -p ExecMainStartTimestampMonotonic --value)',
        )
      )
        .split(' ')
        .map(Number);
      const hostAfter = Date.now();
      const guestNow = guestNowNs / 1e6;
      const offsetLow = guestNow - hostAfter; // guest clock minus host clock, lower bound
      const unitStartHost = guestNow - (uptimeS * 1000 - startMonoUs / 1000) - offsetLow;
      const agentReadyHost = Date.parse(back.guest!.agentStartedAt) - offsetLow;
      const reconnectedHost = Date.parse(back.ssh.since);
      const rel = (t: number) => `${((t - reconnectedHost) / 1000).toFixed(1)} s`;
      console.log(
        `[vm] relative to tether's reconnect: systemd started tether-guest at ${rel(unitStartHost)}, the agent` +
          ` reports its start at ${rel(agentReadyHost)} (guest-host clock offset in [${Math.round(offsetLow)},` +
          ` ${Math.round(guestNow - hostBefore)}] ms)`,
      );
      const unitStartHostEarliest = unitStartHost - (hostAfter - hostBefore); // with the upper bound of the offset
      expect(unitStartHostEarliest).toBeGreaterThan(rebootAt);
      const sinceReboot = logLines(rebootAt);
      const story = sinceReboot.filter((l) => l.component === 'link' || l.component === 'provision');
      console.log(
        `[vm] link and provisioning after the reboot:\n${story.map((l) => `  ${l.time} [${l.component}] ${l.msg}`).join('\n')}`,
      );
      // The guest agent said the guest was shutting down, so until the SSH connection came back tether neither tried
      // to start it nor to remount, and nothing of the shutdown was logged as an error: the mount was suspended.
      const reconnectLine = sinceReboot.findIndex((l) => l.component === 'ssh' && l.msg === 'ssh connected');
      expect(reconnectLine).toBeGreaterThan(0);
      const shutdown = sinceReboot.slice(0, reconnectLine);
      expect(shutdown.map((l) => l.msg)).toContainEqual(
        expect.stringMatching(/^guest agent stopping: the guest is shutting down/),
      );
      expect(shutdown.filter((l) => l.level >= 50)).toEqual([]);
      // Nor after an SSH reconnect into the guest, until the guest is known to be back: its agent (started by
      // systemd) answers, or its uptime shows it booted since the goodbye (then the mounts are made at once, while
      // systemd starts the agent).
      const linkUp = sinceReboot.findIndex((l) => l.component === 'link' && l.msg.startsWith('agent link up'));
      expect(linkUp).toBeGreaterThan(reconnectLine);
      const bootedAgain = sinceReboot.findIndex(
        (l) => l.component === 'link' && l.msg.startsWith('the guest booted again'),
      );
      const guestBack = bootedAgain > reconnectLine ? Math.min(bootedAgain, linkUp) : linkUp;
      expect(sinceReboot.slice(0, guestBack).filter((l) => /starting it|^mount \S+ mounting/.test(l.msg))).toEqual([]);
      expect(shutdown.map((l) => l.msg)).toContainEqual(
        expect.stringMatching(/^mount \S+ suspended: the guest is shutting down$/),
      );
      expect(sinceReboot.filter((l) => l.msg === 'guest agent uploaded')).toEqual([]);
      expect(sinceReboot.filter((l) => l.msg === 'guest agent systemd unit installed')).toEqual([]);
      expect(back.requirements.map((q) => q.state)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
      const pid = back.guest!.agentPid;
      expect(await v.sshOk('systemctl show tether-guest -p MainPID --value')).toBe(String(pid));
      expect(await v.sshOk(`ps -o user= -p ${pid}`)).toBe('root');
      expect(await v.sshOk(`stat -c %U ${AGENT_SOCKET}`)).toBe(VM_USER);

      // The old server died with the reboot; a new one is forwarded without any manual action.
      await waitFor(async () => !(await forwards()).some((f) => f.guestAddr === `0.0.0.0:${portA}`), {
        what: `the forward of the pre-reboot guest port ${portA} to go away`,
        timeoutMs: 2 * MIN,
        intervalMs: 1000,
      });
      const portB = await freePort();
      await startGuestServer(portB);
      await waitForwarded(portB);
      timed('reboot to new forward back', rebootAt);
      await expectServedOnBothLoopbacks(portB);

      await expectMountsWork('reboot');
      timed('reboot to mounts working', rebootAt);
    },
    30 * MIN,
  );

  it(
    'a guest agent stopped with systemctl stop is started again, and the log says so',
    async () => {
      const v = theVm();
      const since = Date.now();
      const before = (await status()).guest?.agentPid;
      await v.sshOk('sudo -n systemctl stop tether-guest && echo stopped');
      await waitFor(
        async () => {
          const s = await status();
          return s.state === 'ready' && s.guest?.agentPid !== before;
        },
        { what: 'the link to a guest agent started again', timeoutMs: 3 * MIN, intervalMs: 1000 },
      );
      expect(await v.sshOk('systemctl is-active tether-guest')).toBe('active');
      expect(
        logLines(since).filter(
          (l) => l.component === 'provision' && /tether-guest\.service is installed but not running/.test(l.msg),
        ),
      ).toHaveLength(1);
    },
    5 * MIN,
  );

  it(
    'tether down leaves nothing on the host; the guest agent keeps running in the VM',
    async () => {
      const v = theVm();
      const agentPid = Number(readFileSync(join(home, NAME, 'ha.pid'), 'utf8').trim());
      expect(alive(agentPid)).toBe(true);
      const r = await cli('down', NAME);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/stopped instance vmtest/);
      await waitFor(() => !alive(agentPid), { what: `host agent pid ${agentPid} to exit`, timeoutMs: MIN });
      expect(existsSync(join(home, NAME, 'ha.sock'))).toBe(false);
      expect(existsSync(join(home, NAME, 'ha.pid'))).toBe(false);
      expect(processesUsingHome(home)).toEqual([]);

      // The guest agent belongs to the VM: still active, still listening; the mounts are gone.
      expect(await v.sshOk('systemctl is-active tether-guest')).toBe('active');
      expect(await v.sshOk(`test -S ${AGENT_SOCKET} && echo present`)).toBe('present');
      await waitFor(async () => (await v.ssh(`grep -c fuse.sshfs /proc/self/mountinfo`)).stdout.trim() === '0', {
        what: 'the sshfs mounts to go away in the guest',
        timeoutMs: MIN,
        intervalMs: 1000,
      });

      await v.stop();
      vm = null;
    },
    5 * MIN,
  );
});
