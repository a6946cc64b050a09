// inotify propagation over `driver: openssh` mounts: the guest applier's marker touches are answered by the filter in
// front of sftp-server (host/src/sftp/marker-filter.ts), so host files keep the times the host gave them (also files
// outside the export that a symlink in it points to), and read-only mounts get events too. A raw inotify watcher in
// the guest shows what guest watchers receive: IN_ATTRIB on the changed path and on its directory, no IN_MODIFY,
// IN_CLOSE_WRITE or IN_CREATE.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsApplier } from '../guest/src/inotify/applier.js';
import { silentLogger as guestSilentLogger } from '../guest/src/log.js';
import { type MountFixture, startMount, waitFor } from './helpers/mount-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';

/** 2001-01-01T00:00:00Z: a time no touch of "now" can produce. */
const OLD = 978_307_200;

// Prints `MASKNAMES name` for every inotify event on the watched directory (name empty: the directory itself).
const RAW_WATCHER = `
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
names = {0x1:'ACCESS',0x2:'MODIFY',0x4:'ATTRIB',0x8:'CLOSE_WRITE',0x10:'CLOSE_NOWRITE',0x20:'OPEN',0x40:'MOVED_FROM',
         0x80:'MOVED_TO',0x100:'CREATE',0x200:'DELETE',0x400:'DELETE_SELF',0x800:'MOVE_SELF',0x40000000:'ISDIR'}
if libc.inotify_add_watch(fd, sys.argv[1].encode(), 0xfff) < 0: sys.exit('inotify_add_watch failed')
print('ready', flush=True)
while True:
    buf = os.read(fd, 65536)
    off = 0
    while off < len(buf):
        wd, mask, cookie, length = struct.unpack_from('iIII', buf, off)
        name = buf[off+16:off+16+length].rstrip(b'\\0').decode()
        off += 16 + length
        print('|'.join(v for k, v in names.items() if mask & k), name, flush=True)
`;

interface RawWatcher {
  lines: string[];
  /** Events reported for `name` ('' for the watched directory itself), as mask names. */
  masks(name: string): string[];
  stop(): void;
}

async function rawWatcher(tb: Testbed, dir: string): Promise<RawWatcher> {
  const lines: string[] = [];
  const child: ChildProcess = tb.spawn('/usr/bin/python3', ['-c', RAW_WATCHER, dir], { user: tb.user });
  let buffered = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    const parts = (buffered + d).split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
  });
  await waitFor(() => lines.includes('ready'), { what: 'raw inotify watcher ready in the guest' });
  lines.length = 0;
  return {
    lines,
    masks: (name) =>
      lines.flatMap((l) => {
        const [mask, ...rest] = l.split(' ');
        return rest.join(' ') === name ? mask.split('|') : [];
      }),
    stop: () => child.kill('SIGTERM'),
  };
}

/** The fixture's mount with every recorded batch also handed to the guest applier. */
function applyBatches(m: MountFixture, applier: FsApplier): void {
  const record = m.batches;
  record.push = (...batches: FsEvents[]) => {
    for (const b of batches) applier.submit(b);
    return Array.prototype.push.apply(record, batches);
  };
}

const mtime = (path: string) => statSync(path).mtimeMs;

describe.skipIf(!canRunTestbed())('mount inotify propagation with driver openssh (writable)', () => {
  const tb = useTestbed();
  let m: MountFixture;
  const applier = new FsApplier(guestSilentLogger);
  const outsideDir = mkdtempSync(join(tmpdir(), 'tether-outside-'));

  beforeAll(async () => {
    m = await startMount(tb(), { driver: 'openssh', writable: true, inotify: true });
    applyBatches(m, applier);
  });
  afterAll(async () => {
    applier.close();
    await m?.stop();
    rmSync(outsideDir, { recursive: true, force: true });
  });

  it('uses the marker touch', async () => {
    writeFileSync(join(m.location, 'first.txt'), 'x');
    await waitFor(() => m.batches.length > 0, { what: 'a batch' });
    expect(m.batches.every((b) => b.markerTouch === true)).toBe(true);
  });

  it('reports a host file with an old mtime to the guest watcher and leaves that mtime alone', async () => {
    const w = await rawWatcher(tb(), m.mountPoint);
    try {
      const file = join(m.location, 'old.txt');
      writeFileSync(file, 'one');
      utimesSync(file, OLD, OLD);
      await waitFor(() => w.masks('old.txt').includes('ATTRIB'), { what: 'guest IN_ATTRIB on old.txt' });
      await applier.idle();
      expect(mtime(file)).toBe(OLD * 1000);

      // The host rewrites it and puts the old time back (cp -p, tar x, rsync -t do that).
      w.lines.length = 0;
      const applied = applier.applied;
      writeFileSync(file, 'two, longer');
      utimesSync(file, OLD, OLD);
      await waitFor(() => w.masks('old.txt').includes('ATTRIB'), { what: 'guest IN_ATTRIB after the rewrite' });
      await waitFor(() => applier.applied > applied, { what: 'the applier touched it' });
      await applier.idle();
      expect(mtime(file)).toBe(OLD * 1000);
      expect(statSync(file).atimeMs).toBe(OLD * 1000);
    } finally {
      w.stop();
    }
  });

  it('leaves alone the time of a file outside the export that a symlink in it points to', async () => {
    const outside = join(outsideDir, 'x');
    writeFileSync(outside, 'outside');
    utimesSync(outside, OLD, OLD);
    const applied = applier.applied;
    symlinkSync(outside, join(m.location, 'lnk'));
    await waitFor(() => m.batches.some((b) => b.events.some((e) => e.path === 'lnk')), { what: 'host event for lnk' });
    // The link itself and the export's root are touched.
    await waitFor(() => applier.applied >= applied + 2, { what: 'the applier touched lnk' });
    await applier.idle();
    expect(mtime(outside)).toBe(OLD * 1000);
    expect(statSync(outside).atimeMs).toBe(OLD * 1000);
  });
});

describe.skipIf(!canRunTestbed())('mount inotify propagation with driver openssh (read-only)', () => {
  const tb = useTestbed();
  let m: MountFixture;
  const applier = new FsApplier(guestSilentLogger);

  beforeAll(async () => {
    m = await startMount(tb(), { driver: 'openssh', writable: false, inotify: true });
    applyBatches(m, applier);
  });
  afterAll(async () => {
    applier.close();
    await m?.stop();
  });

  it('gives a guest watcher IN_ATTRIB on the path and its directory for host edits, nothing else', async () => {
    const w = await rawWatcher(tb(), m.mountPoint);
    try {
      const file = join(m.location, 'ro.txt');
      writeFileSync(file, 'created');
      await waitFor(() => w.masks('ro.txt').includes('ATTRIB'), { what: 'guest IN_ATTRIB on ro.txt (create)' });
      await waitFor(() => w.masks('').includes('ATTRIB'), { what: 'guest IN_ATTRIB on the directory (create)' });
      w.lines.length = 0;
      writeFileSync(file, 'modified on the host');
      await waitFor(() => w.masks('ro.txt').includes('ATTRIB'), { what: 'guest IN_ATTRIB on ro.txt (modify)' });
      mkdirSync(join(m.location, 'newdir'));
      await waitFor(() => w.masks('newdir').includes('ATTRIB'), { what: 'guest IN_ATTRIB on newdir' });
      await applier.idle();
      // What a host edit does not raise in the guest: tools waiting for these see nothing.
      const all = w.lines.flatMap((l) => l.split(' ')[0].split('|'));
      expect(all).not.toContain('MODIFY');
      expect(all).not.toContain('CLOSE_WRITE');
      expect(all).not.toContain('CREATE');
    } finally {
      w.stop();
    }
  });
});
