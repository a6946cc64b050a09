import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ListenEvents, tracefsRoots } from './listen-events.js';

describe('tracefsRoots', () => {
  it('lists tracefs mount points from the mount table, unescaped, and only those', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-mounts-'));
    try {
      const mounts = join(dir, 'mounts');
      writeFileSync(
        mounts,
        [
          'sysfs /sys sysfs rw,nosuid 0 0',
          'tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec 0 0',
          'nodev /tmp/my\\040trace tracefs rw 0 0',
          'debugfs /sys/kernel/debug debugfs rw 0 0',
          '',
        ].join('\n'),
      );
      const roots = tracefsRoots(mounts);
      expect(roots.slice(0, 2)).toEqual(['/sys/kernel/tracing', '/tmp/my trace']);
      expect(roots).not.toContain('/sys/kernel/debug');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Root and a tracefs are needed; under CI a missing one is a failure, not a skip. */
function canTrace(): boolean {
  const reason = process.getuid?.() !== 0 ? 'needs root to use tracefs' : null;
  if (reason === null) return true;
  if (process.env.CI === 'true') throw new Error(`listen events test cannot run under CI: ${reason}`);
  console.warn(`skipping the listen events test: ${reason}`);
  return false;
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function listen(): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

// A tracefs of our own (mounted here for the test; the kernel's instance directories are real), and real sockets.
describe.runIf(canTrace())('ListenEvents on a real tracefs', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'tether-tracefs-'));
    execFileSync('mount', ['-t', 'tracefs', 'nodev', root]);
  });
  afterAll(() => {
    // Lazily: an agent of a concurrent test may hold an instance of it.
    spawnSync('umount', ['-l', root]);
    rmSync(root, { recursive: true, force: true });
  });

  it('wakes when a TCP socket starts and stops listening, and removes its instance when stopped', async () => {
    const events = new ListenEvents({ roots: [root] });
    let wakes = 0;
    events.start(() => wakes++);
    const instance = join(root, 'instances', `tether-guest-${process.pid}`);
    expect(events.state).toEqual({ on: true, detail: `tracefs ${root}` });
    expect(existsSync(instance)).toBe(true);

    const server = await listen();
    await until('a wake-up for the new listener', () => wakes > 0);
    const afterListen = wakes;
    await new Promise((resolve) => server.close(resolve));
    await until('a wake-up for the closed listener', () => wakes > afterListen);
    expect(events.events).toBeGreaterThanOrEqual(2);

    events.stop();
    expect(events.state.on).toBe(false);
    await until('the instance to be removed', () => !existsSync(instance));
  });

  it('goes on when started again before the last stop has ended its read', async () => {
    const events = new ListenEvents({ roots: [root] });
    let first = 0;
    let second = 0;
    events.start(() => first++);
    events.stop();
    events.start(() => second++);
    expect(events.state.on).toBe(true);
    // The stop's marker ends the read first; the read that follows is the second start's.
    await until('the marker read', () => second > 0);
    const base = second;
    const server = await listen();
    await until('a wake-up for the new listener', () => second > base);
    await new Promise((resolve) => server.close(resolve));
    expect(first).toBe(0);
    events.stop();
    await until(
      'the instance to be removed',
      () => !existsSync(join(root, 'instances', `tether-guest-${process.pid}`)),
    );
  });

  it('removes instances left by agents that no longer run, and keeps those of running ones', async () => {
    const dead = spawnSync('true').pid;
    const stale = join(root, 'instances', `tether-guest-${dead}`);
    const live = join(root, 'instances', `tether-guest-${process.ppid}`);
    mkdirSync(stale);
    mkdirSync(live);
    const events = new ListenEvents({ roots: [root] });
    try {
      events.start(() => {});
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(live)).toBe(true);
    } finally {
      events.stop();
      await until(
        'our instance to be removed',
        () => !existsSync(join(root, 'instances', `tether-guest-${process.pid}`)),
      );
      rmdirSync(live); // an instance goes with rmdir alone (its files are the kernel's)
    }
  });

  it('says why when there is no tracefs to use, and does not throw', () => {
    const notTracefs = mkdtempSync(join(tmpdir(), 'tether-not-tracefs-'));
    try {
      const events = new ListenEvents({ roots: [notTracefs] });
      events.start(() => {});
      expect(events.state.on).toBe(false);
      expect(events.state.detail).toContain(notTracefs);
      events.stop();
    } finally {
      rmSync(notTracefs, { recursive: true, force: true });
    }
  });
});
