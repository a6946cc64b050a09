import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { componentLogger } from '../log.js';
import { ProblemRing } from './problems.js';

describe('ProblemRing', () => {
  it('records the warnings and errors of a tapped logger and of the children modules make from it', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const ring = new ProblemRing(3);
    const root = ring.tap(pino({ level: 'info' }, sink), 'agent');
    const mount = componentLogger(root, 'mount', { mountPoint: '/home/me' });
    const sftp = mount.child({ component: 'sftp' });
    root.warn('agent warning');
    mount.info('not a problem');
    mount.error({ err: 'EACCES' }, 'mount failed');
    sftp.warn('bad packet');
    expect(ring.list().map((p) => `${p.component}: ${p.msg}`)).toEqual([
      'agent: agent warning',
      'mount: mount failed',
      'sftp: bad packet',
    ]);
    root.error('fourth');
    expect(ring.list()).toHaveLength(3);
    expect(ring.list()[0].msg).toBe('mount failed');
    // The log lines themselves are written as usual, with their bindings.
    expect(lines.some((l) => l.includes('"component":"sftp"') && l.includes('"mountPoint":"/home/me"'))).toBe(true);
  });
});
