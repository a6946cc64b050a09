// inotify propagation over a tether mount: host edits under the export become `fs.events` batches (relative to the
// guest mount point, ignored trees pruned), the guest's applier (tether-guest's FsApplier, run here against the
// real sshfs mount) turns them into kernel events a guest watcher sees, on writable and on read-only mounts (the
// default), and the applier's own touches change nothing on the host and do not come back as new events (no loop).
import { appendFileSync, mkdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsApplier } from '../guest/src/inotify/applier.js';
import { silentLogger as guestSilentLogger } from '../guest/src/log.js';
import { type MountFixture, startMount, waitFor } from './helpers/mount-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';

const has = (batches: FsEvents[], path: string, kind: string) =>
  batches.some((b) => b.events.some((e) => e.path === path && e.kind === kind));

/**
 * A recursive and a plain fs.watch in the guest see a host create, modify and delete; the applier's touches leave
 * the host file's times as the edit made them.
 */
async function expectGuestWatcherSees(tb: Testbed, m: MountFixture, applier: FsApplier): Promise<void> {
  const seen: string[] = [];
  const script =
    "const fs=require('fs');fs.watch(process.argv[1],{recursive:true},(e,f)=>console.log(e+' '+f));fs.watch(process.argv[1],(e,f)=>console.log('flat '+e+' '+f));console.log('ready')";
  const child = tb.spawn('node', ['-e', script, m.mountPoint], { user: tb.user });
  child.stdout?.setEncoding('utf8').on('data', (d: string) => seen.push(...d.split('\n').filter(Boolean)));
  try {
    await waitFor(() => seen.includes('ready'), { what: 'guest watcher ready' });
    const file = join(m.location, 'g.txt');
    writeFileSync(file, 'created');
    const recursiveSaw = (name: string) => seen.some((l) => !l.startsWith('flat ') && l.endsWith(` ${name}`));
    await waitFor(() => recursiveSaw('g.txt'), { what: 'guest sees create', timeoutMs: 5_000 });
    seen.length = 0;
    appendFileSync(file, ' and modified');
    const edited = statSync(file).mtimeMs;
    await waitFor(() => recursiveSaw('g.txt'), { what: 'guest sees modify', timeoutMs: 5_000 });
    await applier.idle();
    expect(statSync(file).mtimeMs).toBe(edited);
    seen.length = 0;
    rmSync(file);
    // A delete reaches the guest as a touch of the parent directory (IN_ATTRIB on it). A plain watcher on the
    // directory reports that; Node 20's recursive fs.watch does not re-scan on it (guest applier limitation).
    await waitFor(() => seen.some((l) => l.startsWith('flat ')), { what: 'guest sees delete', timeoutMs: 5_000 });
  } finally {
    child.kill('SIGTERM');
  }
}

/**
 * The guest's own changes through the mount (mkdir, create, append, rename, rm) are not sent back to it; a host edit
 * of a path the guest changed is, once the guest's change is past.
 */
async function expectNoGuestEchoes(tb: Testbed, m: MountFixture): Promise<void> {
  const counters = () => m.manager.watchCounters()[m.mountPoint];
  const echoesBefore = counters().echoes;
  const guest = (cmd: string) => tb.exec(cmd, { user: tb.user });
  await guest(
    `mkdir ${m.mountPoint}/gdir && echo hi > ${m.mountPoint}/gdir/g.txt && echo more >> ${m.mountPoint}/gdir/g.txt`,
  );
  await guest(`mv ${m.mountPoint}/gdir/g.txt ${m.mountPoint}/gdir/h.txt && rm ${m.mountPoint}/gdir/h.txt`);
  // A host file made after them is the fence: its event comes after theirs would have.
  writeFileSync(join(m.location, 'fence.txt'), 'x');
  await waitFor(() => has(m.batches, 'fence.txt', 'add'), { what: 'add fence.txt' });
  const paths = m.batches.flatMap((b) => b.events.map((e) => e.path));
  expect(paths.filter((p) => p.startsWith('gdir'))).toEqual([]);
  expect(counters().echoes).toBeGreaterThan(echoesBefore);
  await guest(`echo guest > ${m.mountPoint}/both.txt`);
  await new Promise((r) => setTimeout(r, 1_100)); // past the 1 s in which the guest's change is expected back
  writeFileSync(join(m.location, 'both.txt'), 'host edit');
  await waitFor(() => has(m.batches, 'both.txt', 'change'), { what: 'the host edit of both.txt' });
}

/** The fixture's mount, with every batch it records also handed to `applier` while `applying()`. */
function applyBatches(m: MountFixture, applier: FsApplier, applying: () => boolean): void {
  const record = m.batches;
  record.push = (...batches: FsEvents[]) => {
    if (applying()) for (const b of batches) applier.submit(b);
    return Array.prototype.push.apply(record, batches);
  };
}

describe.skipIf(!canRunTestbed())('mount inotify propagation', () => {
  const tb = useTestbed();
  let m: MountFixture;
  const applier = new FsApplier(guestSilentLogger);
  let applying = true;

  beforeAll(async () => {
    m = await startMount(tb(), { driver: 'builtin', writable: true, inotify: true });
    // Wire the sink to the guest applier as the agent link would (events are recorded by the fixture too).
    applyBatches(m, applier, () => applying);
  });
  afterAll(async () => {
    applier.close();
    await m?.stop();
  });

  it('reports host create, modify, mkdir and delete relative to the guest mount point', async () => {
    writeFileSync(join(m.location, 'a.txt'), 'one');
    await waitFor(() => has(m.batches, 'a.txt', 'add'), { what: 'add a.txt' });
    appendFileSync(join(m.location, 'a.txt'), ' two');
    await waitFor(() => has(m.batches, 'a.txt', 'change'), { what: 'change a.txt' });
    mkdirSync(join(m.location, 'sub'));
    writeFileSync(join(m.location, 'sub', 'b.txt'), 'b');
    await waitFor(() => has(m.batches, 'sub/b.txt', 'add'), { what: 'add sub/b.txt' });
    expect(has(m.batches, 'sub', 'addDir')).toBe(true);
    rmSync(join(m.location, 'a.txt'));
    await waitFor(() => has(m.batches, 'a.txt', 'unlink'), { what: 'unlink a.txt' });
    expect(m.batches.every((b) => b.root === m.mountPoint)).toBe(true);
  });

  it('never watches ignored trees', async () => {
    mkdirSync(join(m.location, 'node_modules', 'pkg'), { recursive: true });
    writeFileSync(join(m.location, 'node_modules', 'pkg', 'index.js'), 'x');
    mkdirSync(join(m.location, 'deep', '.git'), { recursive: true });
    writeFileSync(join(m.location, 'deep', '.git', 'HEAD'), 'x');
    writeFileSync(join(m.location, 'sentinel'), 'x');
    await waitFor(() => has(m.batches, 'sentinel', 'add'), { what: 'add sentinel' });
    const paths = m.batches.flatMap((b) => b.events.map((e) => e.path));
    expect(paths.filter((p) => p.includes('node_modules') || p.includes('.git'))).toEqual([]);
  });

  it('lets a watcher inside the guest see host modify, create and delete', async () => {
    await expectGuestWatcherSees(tb(), m, applier);
  });

  it('shows the guest a host rewrite of the same size in the same second as the content it replaced', async () => {
    const file = join(m.location, 'same.txt');
    const guestRead = async () => (await tb().exec(`cat ${m.mountPoint}/same.txt`, { user: tb().user })).stdout;
    // SFTP v3 times are whole seconds: two writes within one second look alike to the guest unless it reads again.
    // Both writes get the same whole-second mtime, as two writes within a second would.
    const second = Math.floor(Date.now() / 1000);
    writeFileSync(file, 'version-A');
    utimesSync(file, second, second);
    await waitFor(async () => (await guestRead()) === 'version-A', { what: 'the guest reads version A' });
    writeFileSync(file, 'version-B');
    utimesSync(file, second, second);
    await waitFor(async () => (await guestRead()) === 'version-B', {
      what: 'the guest reads version B',
      timeoutMs: 2_000,
    });
  });

  it("does not send the guest's own changes through the mount back to it, and still sends a host edit after", () =>
    expectNoGuestEchoes(tb(), m));

  it('does not loop: the applier touch is not sent back over 30 s', async () => {
    await applier.idle();
    const counters = () => m.manager.watchCounters()[m.mountPoint];
    const echoesBefore = counters().echoes;
    writeFileSync(join(m.location, 'loop.txt'), 'ping');
    await waitFor(() => has(m.batches, 'loop.txt', 'add'), { what: 'add loop.txt' });
    const sentAfterEdit = counters().sent;
    // An observation window, not a wait for readiness: a loop would keep sending during it.
    const deadline = Date.now() + 30_000;
    let maxSent = sentAfterEdit;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      maxSent = Math.max(maxSent, counters().sent);
    }
    // At most the parent directory touch may surface once; nothing may repeat. The marker touch changes nothing on
    // the host, so there is not even an echo to drop.
    expect(maxSent - sentAfterEdit).toBeLessThanOrEqual(1);
    expect(counters().echoes).toBe(echoesBefore);
    applying = false;
  }, 60_000);
});

describe.skipIf(!canRunTestbed())('mount inotify propagation on a read-only mount', () => {
  const tb = useTestbed();
  let m: MountFixture;
  const applier = new FsApplier(guestSilentLogger);

  beforeAll(async () => {
    m = await startMount(tb(), { driver: 'builtin', writable: false, inotify: true });
    applyBatches(m, applier, () => true);
  });
  afterAll(async () => {
    applier.close();
    await m?.stop();
  });

  it('lets a watcher inside the guest see host modify, create and delete', async () => {
    await expectGuestWatcherSees(tb(), m, applier);
    expect(m.batches.every((b) => b.markerTouch === true)).toBe(true);
  });
});

describe.skipIf(!canRunTestbed())('mount inotify propagation with the openssh driver', () => {
  const tb = useTestbed();
  let m: MountFixture;

  beforeAll(async () => {
    m = await startMount(tb(), { driver: 'openssh', writable: true, inotify: true });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it("does not send the guest's own changes through sftp-server back to it, and still sends a host edit after", () =>
    expectNoGuestEchoes(tb(), m));
});
