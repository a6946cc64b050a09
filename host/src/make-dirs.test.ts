import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeDirs } from './make-dirs.js';

describe('makeDirs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-make-dirs-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('makes the missing parents with the mode, and takes an existing directory as made', () => {
    const deep = join(dir, 'a', 'b', 'c');
    makeDirs(deep, 0o700);
    expect(statSync(deep).isDirectory()).toBe(true);
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
    makeDirs(deep, 0o700);
  });

  it('throws, and returns, where a parent refuses new entries (procfs answers ENOENT)', () => {
    expect(() => makeDirs('/proc/tether-nonexistent/x', 0o700)).toThrow(/ENOENT.*\/proc\/tether-nonexistent/);
    writeFileSync(join(dir, 'file'), '');
    expect(() => makeDirs(join(dir, 'file', 'x'))).toThrow(/ENOTDIR|EEXIST/);
  });
});
