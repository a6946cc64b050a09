// A file system error that escapes a command reads as one line in tether's words, not Node's.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { describeError } from './errors.js';

describe('describeError', () => {
  const saved = process.env.TETHER_HOME;
  afterEach(() => {
    if (saved === undefined) delete process.env.TETHER_HOME;
    else process.env.TETHER_HOME = saved;
  });

  it('names the call, the path and the reason of a system error, and TETHER_HOME when the path is under it', () => {
    const home = mkdtempSync(join(tmpdir(), 'tether-errors-'));
    try {
      process.env.TETHER_HOME = home;
      const err = (() => {
        try {
          statSync(join(home, 'dev', 'logs'));
        } catch (e) {
          return e;
        }
      })();
      expect(describeError(err)).toBe(
        `cannot stat ${join(home, 'dev', 'logs')}: no such file or directory (ENOENT); TETHER_HOME is ${home}`,
      );
      process.env.TETHER_HOME = join(home, 'elsewhere');
      expect(describeError(err)).toBe(`cannot stat ${join(home, 'dev', 'logs')}: no such file or directory (ENOENT)`);
      expect(describeError(new Error('plain'))).toBe('plain');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
