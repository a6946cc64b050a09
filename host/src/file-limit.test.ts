// The agent's view of its open-file limit, read through a real shell under prlimit.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { lowFileLimitWarning, openFileLimit } from './file-limit.js';

describe('openFileLimit', () => {
  it('reads the soft limit this process runs with', () => {
    const r = spawnSync('prlimit', ['--nofile', '--output=SOFT', '--noheadings', `--pid=${process.pid}`], {
      encoding: 'utf8',
    });
    const soft = r.stdout.trim();
    expect(openFileLimit()).toBe(soft === 'unlimited' ? soft : Number(soft));
  });

  it('warns about a limit that caps forwarded connections, with the way to raise it', () => {
    expect(lowFileLimitWarning(1024)).toMatch(/limited to 1024 \(ulimit -n\).*about 960 at once.*LimitNOFILE=/);
    expect(lowFileLimitWarning(65536)).toBeNull();
    expect(lowFileLimitWarning('unlimited')).toBeNull();
    expect(lowFileLimitWarning(null)).toBeNull();
  });
});
