// The host CLI and agent run as an ordinary user, as developers run them (every other test runs them as root): guest
// services on ports below 1024 that this user cannot bind (a root web server on 80, chronyd's UDP 323) are a note in
// `up` with a `forward add` that works, a warning in doctor with the same fix, and no problem in `status`.
import type { ChildProcess } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../host/src/instance.js';
import { cliBuilt, runCliWith, writeTestbedConfig } from './helpers/cli-helpers.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const NAME = 'plain';
const NOBODY = 65534;
const haveGuestBuild = existsSync(new URL('../build/guest/manifest.json', import.meta.url));

describe.skipIf(!canRunTestbed() || !cliBuilt() || !haveGuestBuild)('tether run by a user without root', () => {
  const testbed = useTestbed();
  const home = mkdtempSync(join(tmpdir(), 'tether-non-root-'));
  let tb: Testbed;
  let installDir: string;
  const services: ChildProcess[] = [];

  /** The built CLI as user nobody, with HOME and TETHER_HOME in its own directory. */
  const cli = (...args: string[]) =>
    runCliWith(join(home, '.tether'), args, { asUid: NOBODY, env: { HOME: home }, timeoutMs: 120_000 });

  beforeAll(async () => {
    tb = testbed();
    installDir = join(tb.guestDir, 'install');
    chownSync(home, NOBODY, NOBODY);
    const key = join(home, 'key');
    copyFileSync(tb.identityFile, key);
    chownSync(key, NOBODY, NOBODY);
    // Root's services in the guest, on their own ports below 1024.
    const script =
      'import socket,time\n' +
      't=socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", 80)); t.listen()\n' +
      'u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 323))\n' +
      'print("up", flush=True); time.sleep(3600)\n';
    const service = tb.spawn('python3', ['-c', script]);
    services.push(service);
    await new Promise((resolve) => service.stdout?.once('data', resolve));
    const config = writeTestbedConfig(join(home, 'plain.yaml'), tb, {
      ssh: { identityFile: key },
      guestAgent: { installDir },
    });
    chownSync(config, NOBODY, NOBODY);
  });

  afterAll(async () => {
    if (existsSync(join(home, '.tether', NAME, 'ha.sock'))) await cli('down', NAME);
    for (const s of services) s.kill();
    try {
      const guestPid = Number(readFileSync(join(installDir, 'agent.pid'), 'utf8').trim());
      if (guestPid && isAlive(guestPid)) process.kill(guestPid, 'SIGTERM');
    } catch {}
    rmSync(home, { recursive: true, force: true });
  });

  it('up notes the guest services below 1024 with a forward add from a port the user may bind', async () => {
    const r = await cli('up', NAME, '-c', join(home, 'plain.yaml'), '--timeout', '90');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(
      'tether: note: 2 guest listeners on ports below 1024 not forwarded (this host user may not listen there): ' +
        `tcp 127.0.0.1:80, udp 127.0.0.1:323; to reach one, forward it from another port, e.g. \`tether forward add ${NAME} 10080:80\`\n`,
    );
  });

  it('status lists them as privileged forwards, not among its problems', async () => {
    const r = await cli('status', NAME, '--json');
    expect(r.code).toBe(0);
    const status = JSON.parse(r.stdout);
    expect(status.forwards.privileged).toBe(2);
    expect(status.lastErrors.filter((e: { msg: string }) => e.msg.includes('privileged'))).toEqual([]);
  });

  it("doctor warns with a fix that works: the forward add it names serves the guest's port 80", async () => {
    const r = await cli('doctor', NAME, '--json');
    expect(r.code).toBe(0);
    const checks = JSON.parse(r.stdout) as { name: string; state: string; fix: string | null }[];
    const web = checks.find((c) => c.name === 'forward tcp guest 127.0.0.1:80');
    expect(web?.state).toBe('warn');
    expect(web?.fix).toContain(`\`tether forward add ${NAME} 10080:80\``);
    const added = await cli('forward', 'add', NAME, '10080:80');
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    await waitFor(async () => {
      const ls = JSON.parse((await cli('forward', 'ls', NAME, '--json')).stdout) as {
        hostAddrs: string[];
        state: string;
      }[];
      return ls.some((f) => f.hostAddrs.includes('127.0.0.1:10080') && f.state === 'forwarding');
    });
  });

  it('a guest port forwarded from another host port is no longer a privileged problem, and is again once that goes', async () => {
    interface Row {
      proto: string;
      guestAddr: string;
      hostAddrs: string[];
      state: string;
      error: string | null;
    }
    const ls = async () => JSON.parse((await cli('forward', 'ls', NAME, '--json')).stdout) as Row[];
    // The detected listener of guest port 80 (the added forward goes to that port from host port 10080).
    const detected80 = (rows: Row[]) =>
      rows.find((f) => f.proto === 'tcp' && f.guestAddr === '127.0.0.1:80' && !f.hostAddrs.includes('127.0.0.1:10080'));
    const added = (await ls()).find((f) => f.hostAddrs.includes('127.0.0.1:10080'));
    expect(added).toBeDefined();
    const ignored = await waitFor(async () => {
      const row = detected80(await ls());
      return row?.state === 'ignored' ? row : undefined;
    });
    expect(ignored.error).toBe(
      'host 127.0.0.1:80, [::1]:80 needs privileges; guest port 80 is served on host 127.0.0.1:10080, [::1]:10080 ' +
        '(forward tcp/127.0.0.1:80->10080)',
    );
    expect(ignored.hostAddrs).toEqual([]); // nothing listens for it: its reason names the addresses

    const status = JSON.parse((await cli('status', NAME, '--json')).stdout);
    expect(status.forwards.privileged).toBe(1); // udp 323 alone
    const checks = JSON.parse((await cli('doctor', NAME, '--json')).stdout) as { name: string; state: string }[];
    expect(checks.find((c) => c.name === 'forward tcp guest 127.0.0.1:80')?.state ?? 'ok').not.toBe('warn');

    const removed = await cli('forward', 'rm', NAME, '10080:80');
    expect(removed.code).toBe(0);
    await waitFor(async () => detected80(await ls())?.state === 'privileged');
  });

  it('refuses a forward add to a host port below 1024 with a spec that keeps its host address', async () => {
    const r = await cli('forward', 'add', NAME, '127.0.0.2:443:80');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /not added: cannot listen on 127\.0\.0\.2:443 \(EACCES\): .*pick a host port of 1024 or more, e\.g\. 127\.0\.0\.2:10443:80/,
    );
  });
});
