import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { firstOutcome } from './first-outcome.js';

describe('firstOutcome', () => {
  it('settles with the first event and removes every listener', async () => {
    const e = new EventEmitter();
    const waiting = firstOutcome<string>(({ done, fail }) => {
      const onUp = (v: string) => done(v);
      const onDown = (why: string) => fail(new Error(why));
      e.on('up', onUp);
      e.on('down', onDown);
      return () => {
        e.off('up', onUp);
        e.off('down', onDown);
      };
    });
    e.emit('up', 'first');
    e.emit('down', 'too late');
    await expect(waiting).resolves.toBe('first');
    expect(e.listenerCount('up') + e.listenerCount('down')).toBe(0);
  });

  it('fails with the deadline error, and removes listeners that settled while subscribing', async () => {
    const e = new EventEmitter();
    const late = firstOutcome<void>(
      () => {
        const never = () => {};
        e.on('x', never);
        return () => e.off('x', never);
      },
      { ms: 20, error: () => new Error('nothing within 20 ms') },
    );
    await expect(late).rejects.toThrow('nothing within 20 ms');
    expect(e.listenerCount('x')).toBe(0);
    const early = firstOutcome<number>(({ done }) => {
      const l = () => {};
      e.on('y', l);
      done(7);
      return () => e.off('y', l);
    });
    await expect(early).resolves.toBe(7);
    expect(e.listenerCount('y')).toBe(0);
  });
});
