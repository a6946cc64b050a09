// The pid file as the instance's claim: one agent wins, a live owner is named, a dead one's file is taken over.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimPidFile, ensureInstanceDir, instancePaths } from './instance.js';

describe('claimPidFile', () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-instance-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  const paths = instancePaths('claim', home);
  ensureInstanceDir(paths);

  it('claims a free instance, names a live owner, and takes over the file of a dead one', () => {
    expect(claimPidFile(paths)).toBeNull();
    expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.pid}\n`);
    expect(claimPidFile(paths)).toBeNull(); // our own claim again

    writeFileSync(paths.pidFile, `${process.ppid}\n`); // a live process that is not us
    expect(claimPidFile(paths)).toBe(process.ppid);
    expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.ppid}\n`);

    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    writeFileSync(paths.pidFile, `${dead}\n`);
    expect(claimPidFile(paths)).toBeNull();
    expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.pid}\n`);
  });
});
