// Confinement with its parent-directory cache: whatever was cached, a directory (or an ancestor) that is later
// replaced by a link out of the export, renamed or removed — here by a "host process", i.e. behind the server's
// back — must be looked up again and refused or reported missing, never served from the cache.
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FX } from './constants.js';
import { Confinement } from './paths.js';

let tmp: string;
let root: string;
let outside: string;

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tether-paths-'));
  root = join(tmp, 'export');
  outside = join(tmp, 'outside');
  mkdirSync(join(root, 'a', 'b'), { recursive: true });
  writeFileSync(join(root, 'a', 'b', 'f'), 'inside');
  mkdirSync(join(outside, 'b'), { recursive: true });
  writeFileSync(join(outside, 'b', 'f'), 'secret');
  writeFileSync(join(outside, 'f'), 'secret');
});

afterEach(() => rmSync(tmp, { recursive: true, force: true }));

function denied(fn: () => unknown): void {
  expect(fn).toThrow(expect.objectContaining({ status: FX.PERMISSION_DENIED }));
}

describe('Confinement parent cache', () => {
  it('refuses a cached directory that a host process replaced with a link out of the export', () => {
    const c = new Confinement(root);
    expect(c.resolve(`${root}/a/b/f`, false)).toBe(join(root, 'a', 'b', 'f'));
    renameSync(join(root, 'a', 'b'), join(tmp, 'b-moved'));
    symlinkSync(outside, join(root, 'a', 'b'));
    denied(() => c.resolve(`${root}/a/b/f`, false));
    denied(() => c.resolveAndStat(`${root}/a/b/f`, true));
  });

  it('refuses when an ancestor of a cached directory is replaced by a link out of the export', () => {
    const c = new Confinement(root);
    expect(c.resolveAndStat(`${root}/a/b/f`, false).stats?.isFile()).toBe(true);
    renameSync(join(root, 'a'), join(tmp, 'a-moved'));
    symlinkSync(outside, join(root, 'a'));
    denied(() => c.resolve(`${root}/a/b/f`, false));
  });

  it('sees a cached directory disappear', () => {
    const c = new Confinement(root);
    c.resolve(`${root}/a/b/f`, false);
    rmSync(join(root, 'a'), { recursive: true });
    expect(() => c.resolve(`${root}/a/b/f`, false)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('follows a directory link inside the export to its new target after the link changes', () => {
    mkdirSync(join(root, 'c'));
    writeFileSync(join(root, 'c', 'f'), 'c');
    symlinkSync('a/b', join(root, 'l'));
    const c = new Confinement(root);
    expect(c.resolve(`${root}/l/f`, false)).toBe(join(root, 'a', 'b', 'f'));
    rmSync(join(root, 'l'));
    symlinkSync('c', join(root, 'l'));
    expect(c.resolve(`${root}/l/f`, false)).toBe(join(root, 'c', 'f'));
  });
});

describe('Confinement root', () => {
  it('follows a repointed root link at once, also when its old target was moved to the new one', () => {
    const link = join(tmp, 'link');
    symlinkSync(root, link);
    const c = new Confinement(link);
    expect(c.resolve(`${link}/a/b/f`, false)).toBe(join(root, 'a', 'b', 'f'));
    // The export directory moves and the link follows it; a new directory takes the old name.
    const moved = join(tmp, 'moved');
    renameSync(root, moved);
    mkdirSync(join(root, 'a', 'b'), { recursive: true });
    symlinkSync(moved, `${link}.new`);
    renameSync(`${link}.new`, link);
    expect(c.resolve(`${link}/a/b/f`, false)).toBe(join(moved, 'a', 'b', 'f'));
    denied(() => c.resolve(`${root}/a/b/f`, false));
    // Repointed to a directory outside: only that one is served now.
    symlinkSync(outside, `${link}.new`);
    renameSync(`${link}.new`, link);
    expect(c.resolveAndStat(`${link}/b/f`, true).stats?.isFile()).toBe(true);
    denied(() => c.resolve(`${moved}/a/b/f`, false));
    denied(() => c.resolve(`${link}/../moved/a/b/f`, false));
  });

  it('names a root that does not exist in words, not as a bare realpath error', () => {
    const missing = join(tmp, 'gone');
    expect(() => new Confinement(missing)).toThrow(new Error(`host directory ${missing} does not exist`));
  });
});
