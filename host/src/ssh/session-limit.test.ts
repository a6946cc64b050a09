// openSession against a scripted sshd answer: refusals as over the session limit are retried, others are not.
import { describe, expect, it } from 'vitest';
import { openSession, SESSION_LIMIT_HINT } from './session-limit.js';

/** How sshd refuses a session: reason 2 (its default) or 1. */
const refusal = (reason: number) => Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason });

describe('openSession', () => {
  it('opens again while sshd refuses the session as over its limit', async () => {
    let calls = 0;
    const open = async () => {
      calls++;
      if (calls < 3) throw refusal(calls === 1 ? 2 : 1);
      return 'channel';
    };
    await expect(openSession(open, [1, 1, 1])).resolves.toBe('channel');
    expect(calls).toBe(3);
  });

  it('names the session limit when the refusal stays', async () => {
    let calls = 0;
    const open = async () => {
      calls++;
      throw refusal(1);
    };
    await expect(openSession(open, [1, 1])).rejects.toThrow(`open failed (${SESSION_LIMIT_HINT})`);
    expect(calls).toBe(3);
  });

  it('gives up at once on any other failure', async () => {
    let calls = 0;
    const open = async () => {
      calls++;
      throw new Error('Not connected');
    };
    await expect(openSession(open, [1, 1])).rejects.toThrow(/^Not connected$/);
    expect(calls).toBe(1);
  });
});
