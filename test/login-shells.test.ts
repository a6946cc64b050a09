// A guest whose login user's shell is fish. sshd runs every exec request through the login shell, and fish has no
// `VAR=value`, `case` or `{ ...; }`: tether runs each of its scripts as `exec /bin/sh -c '...'`, quoted so that fish
// reads the same words as sh. The whole boot runs as that user: probing, uploading and starting the guest agent,
// the agent link, a forwarded guest server, a writable mount, and the look at a unix socket.
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type HostAgent, runAgent } from '../host/src/agent/index.js';
import { Config } from '../host/src/config/schema.js';
import { isAlive } from '../host/src/instance.js';
import { silentLogger } from '../host/src/log.js';
import { guestServer, roundTrip, stopChild } from './helpers/forward-fixture.js';
import { loginIds } from './helpers/mount-fixture.js';
import { canRunTestbed, testbedConfigInput, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

const FISH_USER = 'tether-tb-fish';
const BUNDLE_DIR = join(import.meta.dirname, '../build/guest');

/** The testbed creates the fish user only where fish is installed (CI installs it). */
function fishUserMissing(): string | null {
  if (!existsSync('/usr/bin/fish')) return '/usr/bin/fish is not installed (apt-get install fish)';
  return null;
}
const missing = canRunTestbed() ? fishUserMissing() : 'no testbed';
if (missing && canRunTestbed()) {
  if (process.env.CI === 'true') throw new Error(`the fish login shell test cannot run under CI: ${missing}`);
  console.warn(`skipping the fish login shell test: ${missing}`);
}

describe.skipIf(!!missing)('a guest user whose login shell is fish', () => {
  const testbed = useTestbed();
  const dirs: string[] = [];
  let agent: HostAgent | null = null;
  let installDir = '';

  afterAll(async () => {
    await agent?.stop('test over');
    const pid = Number(
      existsSync(join(installDir, 'agent.pid')) && readFileSync(join(installDir, 'agent.pid'), 'utf8'),
    );
    if (pid && isAlive(pid)) process.kill(pid, 'SIGTERM');
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('boots, forwards and mounts', async () => {
    const tb = testbed();
    const ids = loginIds(FISH_USER);
    // The guest agent's files and the mount point belong to the fish user; the export is the host's.
    const guestDir = mkdtempSync(join(tmpdir(), 'tether-fish-guest-'));
    const location = mkdtempSync(join(tmpdir(), 'tether-fish-export-'));
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-fish-instance-'));
    dirs.push(guestDir, location, instanceDir);
    chownSync(guestDir, ids.uid, ids.gid);
    const mountPoint = join(guestDir, 'mnt');
    installDir = join(guestDir, 'install');
    mkdirSync(mountPoint);
    chownSync(mountPoint, ids.uid, ids.gid);
    writeFileSync(join(location, 'hello.txt'), 'from the host\n');

    const config = Config.parse(
      testbedConfigInput(tb, {
        ssh: { user: FISH_USER },
        guestAgent: { socket: join(guestDir, 'agent.sock'), installDir },
        mounts: [{ location, mountPoint, writable: true }],
      }),
    );
    const run = await runAgent('fish', config, {
      instanceDir,
      logger: silentLogger(),
      guestBundleDir: BUNDLE_DIR,
      requirementTimeoutMs: 60_000,
    });
    agent = run.agent;
    await run.ready;
    expect(agent.status().requirements.map((r) => r.state)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);

    const port = await freePort();
    const server = await guestServer(tb, 'tcp', '127.0.0.1', port);
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => agent?.forwards().find((f) => f.id === id)?.state === 'forwarding', { what: `${id}` });
    expect((await roundTrip('127.0.0.1', port, 'through fish')).toString()).toBe('through fish');
    await stopChild(server);

    // Read in the guest, by another process: the SFTP server runs in this one.
    expect((await tb.exec(`cat ${mountPoint}/hello.txt`, { user: FISH_USER })).stdout).toBe('from the host\n');
    const r = await tb.exec(`echo 'from the guest' > ${mountPoint}/back.txt`, { user: FISH_USER });
    expect(r.code).toBe(0);
    expect(readFileSync(join(location, 'back.txt'), 'utf8')).toBe('from the guest\n');
  });
});
