// The background agent's file limit: raised to the hard limit before node starts, never lowered.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureInstanceDir, instancePaths } from '../instance.js';
import { spawnAgent, withRaisedFileLimit } from './agent-spawn.js';

/** The soft limit a command started by withRaisedFileLimit sees, under `prlimit --nofile=soft:hard`. */
function softLimitUnder(soft: number, hard: number): string {
  const [file, args] = withRaisedFileLimit('/bin/sh', ['-c', 'ulimit -S -n']);
  const r = spawnSync('prlimit', [`--nofile=${soft}:${hard}`, file, ...args], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`prlimit failed: ${r.error?.message ?? r.stderr}`);
  return r.stdout.trim();
}

describe('withRaisedFileLimit', () => {
  it('raises the soft limit on open files to the hard one (macOS starts at 256, Linux sessions at 1024)', () => {
    expect(softLimitUnder(256, 4096)).toBe('4096');
  });

  it('leaves a soft limit already at the hard one as it is', () => {
    expect(softLimitUnder(2048, 2048)).toBe('2048');
  });

  it('passes the arguments through unchanged, spaces and quotes included', () => {
    const [file, args] = withRaisedFileLimit(process.execPath, [
      '-e',
      'console.log(JSON.stringify(process.argv.slice(1)))',
      'a b',
      '"$x"',
    ]);
    const r = spawnSync(file, args, { encoding: 'utf8' });
    expect(JSON.parse(r.stdout)).toEqual(['a b', '"$x"']);
  });
});

describe('spawnAgent', () => {
  it('moves a stdio log over 1 MiB aside to .1 before it starts, so crash stacks stay but it cannot grow for good', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tether-spawn-'));
    try {
      const paths = instancePaths('big', home);
      ensureInstanceDir(paths);
      writeFileSync(paths.stdioLog, 'x'.repeat(1024 * 1024 + 1));
      const child = spawnAgent(paths);
      await once(child, 'exit');
      expect(statSync(`${paths.stdioLog}.1`).size).toBe(1024 * 1024 + 1);
      expect(statSync(paths.stdioLog).size).toBeLessThan(64 * 1024);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
