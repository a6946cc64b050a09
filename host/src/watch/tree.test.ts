import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type TreeEventKind, TreeWatcher } from './tree.js';

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// Real directories and real inotify watches.
describe('TreeWatcher', () => {
  let root: string;
  let w: TreeWatcher;
  let events: { kind: TreeEventKind; path: string; size: number | undefined }[];
  let gone: number;
  const seen = (kind: TreeEventKind, rel: string) =>
    events.filter((e) => e.kind === kind && e.path === join(root, rel));

  beforeEach(async () => {
    root = mkdtempSync(join(tmpdir(), 'tether-tree-'));
    mkdirSync(join(root, 'a/b'), { recursive: true });
    writeFileSync(join(root, 'a/b/old.txt'), 'old');
    mkdirSync(join(root, 'node_modules/pkg'), { recursive: true });
    events = [];
    gone = 0;
    w = new TreeWatcher(root, { ignored: (p) => p.split('/').includes('node_modules') });
    w.on('event', (kind, path, stats) => events.push({ kind, path, size: stats?.isFile() ? stats.size : undefined }));
    w.on('rootGone', () => gone++);
    await w.start();
  });
  afterEach(() => {
    w.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('watches every directory but ignored ones, and reports nothing for what was there', async () => {
    expect(w.size).toBe(3); // root, a, a/b
    writeFileSync(join(root, 'fence.txt'), '');
    await until(() => seen('add', 'fence.txt').length === 1, 'the fence file');
    expect(events.map((e) => e.path)).toEqual([join(root, 'fence.txt')]);
  });

  it('reports a file added, changed and removed, with its size', async () => {
    writeFileSync(join(root, 'a/b/new.txt'), 'hello');
    await until(() => seen('add', 'a/b/new.txt').length === 1, 'the add');
    writeFileSync(join(root, 'a/b/old.txt'), 'changed!');
    await until(() => seen('change', 'a/b/old.txt').some((e) => e.size === 8), 'the change with the new size');
    rmSync(join(root, 'a/b/new.txt'));
    await until(() => seen('unlink', 'a/b/new.txt').length === 1, 'the unlink');
  });

  it('reports what is made in a new directory before its watch exists, and watches it', async () => {
    mkdirSync(join(root, 'c/d'), { recursive: true });
    writeFileSync(join(root, 'c/d/early.txt'), 'x');
    await until(() => seen('add', 'c/d/early.txt').length === 1, 'the file made right after its directory');
    expect(seen('addDir', 'c')).toHaveLength(1);
    expect(seen('addDir', 'c/d')).toHaveLength(1);
    writeFileSync(join(root, 'c/d/late.txt'), 'y');
    await until(() => seen('add', 'c/d/late.txt').length === 1, 'a file made once it is watched');
  });

  it('reports a directory removed or renamed away, and stops watching under it', async () => {
    renameSync(join(root, 'a'), join(root, 'moved'));
    await until(() => seen('unlinkDir', 'a').length === 1 && seen('addDir', 'moved').length === 1, 'the rename');
    expect(w.size).toBe(3); // root, moved, moved/b: nothing left of a/
    rmSync(join(root, 'moved'), { recursive: true });
    await until(() => seen('unlinkDir', 'moved').length === 1, 'the removal');
    expect(w.size).toBe(1);
  });

  it('does not follow a symlink to a directory, and ignores paths the filter names', async () => {
    symlinkSync('/', join(root, 'slash'));
    writeFileSync(join(root, 'node_modules/pkg/index.js'), '');
    writeFileSync(join(root, 'fence.txt'), '');
    await until(() => seen('add', 'fence.txt').length === 1, 'the fence file');
    expect(seen('add', 'slash')).toHaveLength(1);
    expect(w.size).toBe(3);
    expect(events.some((e) => e.path.includes('node_modules'))).toBe(false);
  });

  it('reports each of many files made at once in one directory exactly once', async () => {
    const n = 2000;
    for (let i = 0; i < n; i++) writeFileSync(join(root, 'a', `f${i}`), '');
    await until(() => events.filter((e) => e.kind === 'add').length >= n, `${n} adds`, 20_000);
    const adds = events.filter((e) => e.kind === 'add').map((e) => e.path);
    expect(new Set(adds).size).toBe(n);
    expect(adds).toHaveLength(n);
  });

  it('watches a directory made again under the same name (rm -rf dist && mkdir dist)', async () => {
    rmSync(join(root, 'a'), { recursive: true });
    mkdirSync(join(root, 'a'));
    writeFileSync(join(root, 'a/fresh.txt'), '');
    await until(() => seen('add', 'a/fresh.txt').length === 1, 'a file in the new directory');
    expect(w.size).toBe(2); // root and the new a/
  });

  it('takes a chmod or touch of a watched directory itself for what it is, not for its removal', async () => {
    chmodSync(root, 0o700);
    utimesSync(root, new Date(), new Date());
    chmodSync(join(root, 'a'), 0o700);
    utimesSync(join(root, 'a/b'), new Date(), new Date());
    // Two fences, the second made once the first is seen: the directories' own events are looked at by then.
    writeFileSync(join(root, 'fence1.txt'), '');
    await until(() => seen('add', 'fence1.txt').length === 1, 'the first fence');
    writeFileSync(join(root, 'a/b/fence2.txt'), '');
    await until(() => seen('add', 'a/b/fence2.txt').length === 1, 'the second fence');
    expect(gone).toBe(0);
    expect(events.map((e) => `${e.kind} ${e.path}`)).toEqual([
      `add ${join(root, 'fence1.txt')}`,
      `add ${join(root, 'a/b/fence2.txt')}`,
    ]);
    expect(w.size).toBe(3);
  });

  it('says the root is gone when it is removed and made again at once, and takes a trailing slash', async () => {
    w.close();
    w = new TreeWatcher(`${root}/`);
    w.on('rootGone', () => gone++);
    await w.start();
    rmSync(root, { recursive: true });
    mkdirSync(root);
    await until(() => gone === 1, 'rootGone');
  });

  it('says when the watched directory itself goes away', async () => {
    rmSync(root, { recursive: true });
    await until(() => gone === 1, 'rootGone');
    expect(w.size).toBe(0);
  });
});
