import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ForwardCaps } from './caps.js';

function recording() {
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void warnings.push(JSON.parse(s).msg) });
  return { log, warnings };
}

describe('ForwardCaps', () => {
  it('caps each kind on its own, warns once per overflow, and again only well under the cap', () => {
    const { log, warnings } = recording();
    const caps = new ForwardCaps(10, log);
    for (let i = 0; i < 10; i++) {
      expect(caps.fits('forwarded', `f${i}`)).toBe(true);
      caps.added('forwarded');
    }
    expect(caps.fits('ignored', 'i0')).toBe(true); // ignored listeners have their own cap
    expect([caps.fits('forwarded', 'x1'), caps.fits('forwarded', 'x2')]).toEqual([false, false]);
    expect(caps.capped).toBe(2);
    expect(warnings).toHaveLength(1);
    caps.removed('forwarded'); // 9 of 10: still at the cap's edge, a new overflow is the same news
    expect(caps.fits('forwarded', 'x3')).toBe(true);
    caps.added('forwarded');
    expect(caps.fits('forwarded', 'x4')).toBe(false);
    expect(warnings).toHaveLength(1);
    for (let i = 0; i < 2; i++) caps.removed('forwarded'); // 8 of 10: below 90 %
    for (let i = 0; i < 2; i++) caps.added('forwarded');
    expect(caps.fits('forwarded', 'x5')).toBe(false);
    expect(warnings).toHaveLength(2);
  });

  it('hands waiting listeners over oldest first, leaving the rest waiting when the caller stops', () => {
    const caps = new ForwardCaps(1, recording().log);
    caps.added('forwarded');
    for (const id of ['a', 'b', 'c']) caps.fits('forwarded', id);
    caps.forget('b');
    const handed: string[] = [];
    for (const id of caps.takeWaiting('forwarded')) {
      handed.push(id);
      break;
    }
    expect(handed).toEqual(['a']);
    expect([...caps.takeWaiting('forwarded')]).toEqual(['c']);
    expect(caps.capped).toBe(0);
  });
});
