// `tether up NAME --ssh USER@HOST:PORT -i KEY` with nothing else (no tether.yaml, every default) against the testbed,
// whose login user has neither root nor sudo: the default guest agent socket (/run/tether) is out of its reach, so
// provisioning starts the agent on the user's own socket in its install directory, and the link, status and doctor
// follow it there.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive } from '../host/src/instance.js';
import { cliBuilt, runCli } from './helpers/cli-helpers.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

const NAME = 'flags';

describe.skipIf(!canRunTestbed() || !cliBuilt())('tether up with flags only', () => {
  const testbed = useTestbed();
  const home = mkdtempSync(join(tmpdir(), 'tether-flags-'));
  // The default mount of ~ is the host user's home: this one (root's, 0700) is no place the guest user can mount on,
  // so requirement 5 is only a warning, whoever runs the tests.
  const hostHome = mkdtempSync(join(tmpdir(), 'tether-flags-home-'));
  const cli = (...args: string[]) => runCli(home, args, 120_000, { HOME: hostHome });
  let guestAgentPid: number | null = null;

  afterAll(async () => {
    await cli('down', NAME);
    if (guestAgentPid && isAlive(guestAgentPid)) process.kill(guestAgentPid, 'SIGTERM');
    rmSync(home, { recursive: true, force: true });
    rmSync(hostHome, { recursive: true, force: true });
  });

  it('starts the guest agent on the login user socket and forwards a guest server', async () => {
    const tb = testbed();
    const r = await cli('up', NAME, '--ssh', `${tb.user}@127.0.0.1:${tb.sshPort}`, '-i', tb.identityFile);
    expect(r.stdout).toMatch(/✓ requirement 3 of 5: guest agent provisioned .*started in background/);
    expect(r.code).toBe(0);

    const status = JSON.parse((await cli('status', NAME, '--json')).stdout);
    guestAgentPid = status.guest?.agentPid ?? null;
    const guestHome = (await tb.ssh('printf %s "$HOME"')).stdout;
    expect(status.link).toMatchObject({ up: true, socket: `${guestHome}/.tether-guest/agent.sock` });

    const port = await freePort();
    tb.spawn('/usr/bin/python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1'], { user: tb.user });
    await waitFor(
      async () => {
        const list = JSON.parse((await cli('forward', 'ls', NAME, '--json')).stdout) as Record<string, unknown>[];
        return list.some((f) => f.guestAddr === `127.0.0.1:${port}` && f.state === 'forwarding');
      },
      { what: `guest port ${port} forwarded`, timeoutMs: 20_000, intervalMs: 200 },
    );
    const res = await fetch(`http://127.0.0.1:${port}/`);
    await res.arrayBuffer();
    expect(res.status).toBe(200);

    const doctor = await cli('doctor', NAME);
    expect(doctor.stdout).toContain(`✓ guest agent: tether-guest`);
    expect(doctor.stdout).toContain(`answers on ${status.link.socket}`);
  });

  it('finds the agent on that socket again: doctor without a host agent, then down and up', async () => {
    expect((await cli('down', NAME)).code).toBe(0);
    const guestHome = (await testbed().ssh('printf %s "$HOME"')).stdout;
    const doctor = await cli('doctor', NAME);
    expect(doctor.stdout).toContain(`answers on ${guestHome}/.tether-guest/agent.sock`);
    const r = await cli('up', NAME);
    expect(r.stdout).toMatch(/✓ requirement 3 of 5: guest agent provisioned .*already current/);
    expect(r.code).toBe(0);
    const status = JSON.parse((await cli('status', NAME, '--json')).stdout);
    expect(status.guest?.agentPid).toBe(guestAgentPid);
  });
});
