// Upgrading tether on the host replaces the guest agent: an agent that answers on the socket but reports another
// build or another protocol version (the shipped bundle with its build hash or protocol version rewritten, started by
// hand) is stopped and replaced by this host's build when the host agent comes up with `provision: auto`, and
// requirement 3 says so; with `provision: never` one of another build is kept, and status says it is not this host's
// build, and one of another protocol version fails requirement 4 at once with the fix (doctor names it too).
import type { ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { HostAgent } from '../host/src/agent/index.js';
import { createLogger } from '../host/src/log.js';
import { BUNDLE_FILE, readManifest } from '../host/src/provision/index.js';
import { cliBuilt, runCli, writeTestbedConfig } from './helpers/cli-helpers.js';
import { type Harness, startAgent, stopChild, testConfig } from './helpers/forward-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const BUILD_DIR = fileURLToPath(new URL('../build/guest', import.meta.url));
const haveBuild = existsSync(join(BUILD_DIR, 'manifest.json'));
if (!haveBuild && process.env.CI === 'true') throw new Error('build/guest missing: run npm run build first');

describe.skipIf(!canRunTestbed() || !haveBuild)('guest agent of another build', () => {
  const testbed = useTestbed();
  const manifest = haveBuild ? readManifest(BUILD_DIR) : null;
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  /** Starts the shipped bundle, edited by `rewrite`, on the configured socket as the login user. */
  async function startOtherAgent(rewrite: (bundle: string) => string): Promise<ChildProcess> {
    const tb = testbed();
    const file = join(tb.guestDir, 'tether-guest-other.cjs');
    const bundle = readFileSync(join(BUILD_DIR, BUNDLE_FILE), 'utf8');
    const edited = rewrite(bundle);
    expect(edited).not.toBe(bundle);
    writeFileSync(file, edited);
    const uid = Number((await tb.exec(`id -u ${tb.user}`)).stdout.trim());
    chownSync(file, uid, uid);
    const other = tb.spawn('node', [file, 'run', '--socket', testConfig(tb).guestAgent.socket], { user: tb.user });
    let out = '';
    other.stdout?.on('data', (d: Buffer) => {
      out += d;
    });
    await waitFor(() => out.includes('agent listening') || other.exitCode !== null, { what: 'the other agent' });
    expect(other.exitCode, out).toBeNull();
    return other;
  }

  async function expectReplaced(other: ChildProcess, logged: string): Promise<void> {
    h = await startAgent(testbed());
    const status = h.agent.status();
    expect(status.state).toBe('ready');
    expect(status.requirements[2].detail).toMatch(/^replaced the running agent/);
    expect(status.guest?.build).toBe(manifest!.hash);
    await waitFor(() => other.exitCode !== null || other.signalCode !== null, { what: 'the other agent to exit' });
    const log = readFileSync(join(h.instanceDir, 'logs', 'current.log'), 'utf8');
    expect(log).toContain(logged);
    // The log says which agent the replacement brought up, also when both report the same version.
    expect(log).toMatch(new RegExp(`agent link up: tether-guest/\\S+ \\(build ${manifest!.hash}\\) pid \\d+`));
  }

  it('replaces an agent that reports another build', async () => {
    const hash = JSON.stringify(manifest!.hash);
    const other = await startOtherAgent((b) => b.replaceAll(hash, JSON.stringify('olderbuild00000')));
    try {
      await expectReplaced(other, '(build olderbuild00000) is not the one this host ships');
    } finally {
      await stopChild(other);
    }
  });

  it('with provision: never keeps an agent of another build, and status and the log say so', async () => {
    const hash = JSON.stringify(manifest!.hash);
    const other = await startOtherAgent((b) => b.replaceAll(hash, JSON.stringify('olderbuild00000')));
    try {
      h = await startAgent(testbed(), { guestAgent: { ...testConfig(testbed()).guestAgent, provision: 'never' } });
      const status = h.agent.status();
      expect(status.state).toBe('ready');
      expect(status.guest?.build).toBe('olderbuild00000');
      const outdated =
        `the guest agent ${manifest!.version} (build olderbuild00000) is not the one this host ships, ` +
        `${manifest!.version} (build ${manifest!.hash}), and guestAgent.provision is never: install this host's ` +
        'tether-guest in the guest, or set provision: auto';
      expect(status.link?.outdated).toBe(outdated);
      expect(other.exitCode).toBeNull();
      expect(readFileSync(join(h.instanceDir, 'logs', 'current.log'), 'utf8')).toContain(outdated);
    } finally {
      await stopChild(other);
    }
  });

  it('with provision: never fails requirement 4 at once on an agent of another protocol version, naming the fix', async () => {
    const other = await startOtherAgent((b) => b.replace('var PROTOCOL_VERSION = 1;', 'var PROTOCOL_VERSION = 2;'));
    const instanceDir = mkdtempSync(join(tmpdir(), 'tether-upgrade-never-'));
    const logger = await createLogger({ dir: join(instanceDir, 'logs'), level: 'debug' });
    const tb = testbed();
    const agent = new HostAgent(
      'test',
      testConfig(tb, { guestAgent: { ...testConfig(tb).guestAgent, provision: 'never' } }),
      {
        instanceDir,
        logger,
        requirementTimeoutMs: 60_000,
      },
    );
    try {
      const started = performance.now();
      await expect(agent.start()).rejects.toThrow(
        /^requirement 4 of 4 \(guest agent running\) failed: protocol version mismatch: this side \(tether\/[\d.]+\) speaks 1, tether-guest\/[\d.]+ speaks 2: this host's tether cannot use that guest agent until it is replaced; guestAgent\.provision is never: install this host's tether-guest in the guest, or set guestAgent\.provision: auto$/,
      );
      expect(performance.now() - started).toBeLessThan(30_000); // not the whole requirement timeout
      expect(agent.link.incompatible).toMatch(/tether-guest\/[\d.]+ speaks 2$/);
      expect(other.exitCode).toBeNull(); // not ours to stop
      if (cliBuilt()) {
        // doctor greets it over a fresh SSH connection: an agent that answers in another protocol, not a silent one.
        mkdirSync(join(instanceDir, 'home', 'never'), { recursive: true });
        writeTestbedConfig(join(instanceDir, 'home', 'never', 'tether.yaml'), tb, {
          guestAgent: { provision: 'never' },
        });
        const doctor = await runCli(join(instanceDir, 'home'), ['doctor', 'never']);
        expect(doctor.stdout).toMatch(
          /^✗ guest agent: the guest agent on \S+ cannot be used: protocol version mismatch: this side \(tether\/[\d.]+ doctor\) speaks 1, tether-guest\/[\d.]+ speaks 2$/m,
        );
        expect(doctor.stdout).toContain(
          "fix: install this host's tether-guest in the guest (tether-guest install), or set guestAgent.provision: auto",
        );
      }
    } finally {
      await agent.stop('test finished');
      await stopChild(other);
      rmSync(instanceDir, { recursive: true, force: true });
    }
  });

  it('replaces an agent that speaks another protocol version', async () => {
    const other = await startOtherAgent((b) => b.replace('var PROTOCOL_VERSION = 1;', 'var PROTOCOL_VERSION = 2;'));
    try {
      await expectReplaced(other, 'protocol version mismatch: this side (tether/');
    } finally {
      await stopChild(other);
    }
  });
});
