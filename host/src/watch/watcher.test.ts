import { appendFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { MountWatcher, type WatchState } from './watcher.js';

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('MountWatcher', () => {
  let dir: string;
  let batches: FsEvents[];
  let states: WatchState[];
  let w: MountWatcher;
  const has = (path: string, kind: string) =>
    batches.some((b) => b.events.some((e) => e.path === path && e.kind === kind));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-watch-'));
    mkdirSync(join(dir, 'node_modules'));
    mkdirSync(join(dir, 'work/src'), { recursive: true });
    batches = [];
    states = [];
    w = watcher();
    await w.start();
  });
  const watcher = (touchEchoes?: boolean | (() => boolean)) =>
    new MountWatcher({
      location: dir,
      mountPoint: '/guest/home',
      ignore: ['node_modules'],
      covered: [join(dir, 'work')],
      touchEchoes,
      log: silentLogger(),
      send: (b) => {
        batches.push(b);
        return true;
      },
      onState: (s) => states.push(s),
    });
  afterEach(async () => {
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends relative paths under the guest root and skips ignored trees', async () => {
    writeFileSync(join(dir, 'node_modules', 'x.js'), 'x');
    writeFileSync(join(dir, 'a.txt'), 'a');
    await until(() => has('a.txt', 'add'), 'add a.txt');
    expect(batches.every((b) => b.root === '/guest/home')).toBe(true);
    expect(batches.flatMap((b) => b.events).some((e) => e.path.includes('node_modules'))).toBe(false);
    expect(states).toEqual(['watching']);
  });

  it('leaves out a directory another mount covers, and only that one', async () => {
    writeFileSync(join(dir, 'work/src/inner.txt'), 'x');
    mkdirSync(join(dir, 'workshop'));
    writeFileSync(join(dir, 'workshop/fence.txt'), 'x');
    // A sibling whose name starts alike is watched; once its file is seen, the covered one's is past.
    await until(() => has('workshop/fence.txt', 'add'), 'the fence');
    expect(batches.flatMap((b) => b.events).filter((e) => e.path.startsWith('work/'))).toEqual([]);
  });

  it('drops the echo of a touch but not a write that follows it at once', async () => {
    writeFileSync(join(dir, 'e.txt'), 'hello');
    await until(() => has('e.txt', 'add'), 'add e.txt');
    // What sftp-server's SETSTAT of the guest's touch does: whole seconds (SFTP v3).
    const now = Math.floor(Date.now() / 1000);
    utimesSync(join(dir, 'e.txt'), now, now);
    await until(() => w.counters.echoes === 1, 'echo dropped');
    appendFileSync(join(dir, 'e.txt'), ' world');
    await until(() => has('e.txt', 'change'), 'change after the echo');
    expect(w.counters.echoes).toBe(1);
  });

  it('filters nothing when the guest touches do not change host files (the marker touch)', async () => {
    await w.close();
    w = watcher(false);
    await w.start();
    writeFileSync(join(dir, 'm.txt'), 'hello');
    await until(() => has('m.txt', 'add'), 'add m.txt');
    const now = Math.floor(Date.now() / 1000);
    utimesSync(join(dir, 'm.txt'), now, now);
    await until(() => has('m.txt', 'change'), 'the whole-second touch');
    expect(w.counters.echoes).toBe(0);
  });

  it('filters the echoes of batches sent while the guest touches for real, asked at each batch', async () => {
    await w.close();
    let realTouches = false;
    w = watcher(() => realTouches);
    await w.start();
    const now = Math.floor(Date.now() / 1000);
    writeFileSync(join(dir, 'marker.txt'), 'hello');
    await until(() => has('marker.txt', 'add'), 'add marker.txt');
    utimesSync(join(dir, 'marker.txt'), now, now);
    await until(() => has('marker.txt', 'change'), 'a whole-second change, not taken for an echo');
    realTouches = true; // a guest agent from before the marker touch
    writeFileSync(join(dir, 'old.txt'), 'hello');
    await until(() => has('old.txt', 'add'), 'add old.txt');
    utimesSync(join(dir, 'old.txt'), now, now);
    await until(() => w.counters.echoes === 1, 'echo dropped');
    expect(has('old.txt', 'change')).toBe(false);
  });

  it('sends a host edit that keeps the size, right after the previous event', async () => {
    writeFileSync(join(dir, 'port.js'), 'port = 3000');
    await until(() => has('port.js', 'add'), 'add port.js');
    writeFileSync(join(dir, 'port.js'), 'port = 3001');
    await until(() => has('port.js', 'change'), 'the same-size edit');
    expect(w.counters.echoes).toBe(0);
  });

  it("drops the events of the guest's own changes, and sends a host edit made right after them", async () => {
    // What the SFTP server does for the guest: change the file, then say so.
    mkdirSync(join(dir, 'gdir'));
    w.guestChanged(join(dir, 'gdir'));
    writeFileSync(join(dir, 'gdir/g.txt'), 'from the guest');
    w.guestChanged(join(dir, 'gdir/g.txt'));
    writeFileSync(join(dir, 'fence.txt'), '');
    await until(() => has('fence.txt', 'add'), 'the fence');
    expect(batches.flatMap((b) => b.events.map((e) => e.path)).filter((p) => p.startsWith('gdir'))).toEqual([]);
    expect(w.counters.echoes).toBeGreaterThan(0);
    // The host edits the same file within the window: its ctime is later than the guest's change, so it goes.
    await new Promise((r) => setTimeout(r, 30));
    writeFileSync(join(dir, 'gdir/g.txt'), 'from the host');
    await until(() => has('gdir/g.txt', 'change'), 'the host edit');
  });

  it("sends a host delete of what the guest just wrote, and drops the guest's own delete", async () => {
    // What the SFTP server does for the guest: change the entry, then say so (and whether the name went away).
    writeFileSync(join(dir, 'gw.txt'), 'from the guest');
    w.guestChanged(join(dir, 'gw.txt'));
    writeFileSync(join(dir, 'gr.txt'), 'from the guest');
    w.guestChanged(join(dir, 'gr.txt'));
    await until(() => w.counters.echoes >= 2, 'the echoes of both writes');
    rmSync(join(dir, 'gr.txt'));
    w.guestChanged(join(dir, 'gr.txt'), true);
    rmSync(join(dir, 'gw.txt')); // the host removes what the guest wrote, within the window
    await until(() => has('gw.txt', 'unlink'), 'the host delete');
    writeFileSync(join(dir, 'fence.txt'), '');
    await until(() => has('fence.txt', 'add'), 'the fence');
    expect(has('gr.txt', 'unlink')).toBe(false);
  });

  it('degrades instead of failing when the host runs out of watches', async () => {
    // biome-ignore lint/complexity/useLiteralKeys: reaching the private tree watcher to inject its error
    const inner = w['watcher'];
    inner?.emit(
      'error',
      Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' }),
    );
    expect(w.state).toBe('degraded');
    expect(w.reason).toContain('ENOSPC');
    expect(states).toEqual(['watching', 'degraded']);
  });

  it('degrades while the host directory is gone, and watches the new one once it is back', async () => {
    rmSync(dir, { recursive: true });
    await until(() => w.state === 'degraded', 'degraded');
    expect(w.reason).toContain(`host directory ${dir} is gone`);
    mkdirSync(join(dir, 'src'), { recursive: true }); // `git clone` into the same place
    await until(() => w.state === 'watching', 'watching again', 10_000);
    await until(() => has('src', 'addDir'), 'its top-level entries sent as added');
    writeFileSync(join(dir, 'src/main.ts'), 'x');
    await until(() => has('src/main.ts', 'add'), 'a file in the new directory');
    expect(states).toEqual(['watching', 'degraded', 'watching']);
  });
});
