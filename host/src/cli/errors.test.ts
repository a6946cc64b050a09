// A file system error that escapes a command reads as one line in tether's words, not Node's.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { listInstances } from '../instance.js';
import { describeError } from './errors.js';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected it to throw');
}

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
      const err = thrown(() => statSync(join(home, 'dev', 'logs')));
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

  it('says a TETHER_HOME that is a file is not a directory, where a missing one just has no instances', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-errors-'));
    try {
      const file = join(dir, 'home');
      expect(listInstances(file)).toEqual([]);
      writeFileSync(file, 'x');
      process.env.TETHER_HOME = file;
      const err = thrown(() => listInstances(file));
      expect(describeError(err)).toBe(`cannot list ${file}: not a directory (ENOTDIR); TETHER_HOME is ${file}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
