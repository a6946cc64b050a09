import { ProtocolError } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { endOfLink, type LinkEnd, RetryDelay } from './retry-delay.js';

const waits = (delay: RetryDelay, ends: LinkEnd[]) => ends.map((end) => delay.after(end));

describe('RetryDelay', () => {
  const opts = { retryInitialMs: 100, retryMaxMs: 800, brokenRetryMaxMs: 3_200, blockedRetryMs: 1_000 };

  it('doubles while there is no link, up to the cap, and starts over after a link that served', () => {
    const delay = new RetryDelay(opts, silentLogger());
    expect(waits(delay, ['failed', 'failed', 'failed', 'failed', 'failed', 'was-up', 'failed'])).toEqual([
      100, 200, 400, 800, 800, 100, 200,
    ]);
  });

  it('waits at least blockedRetryMs while blocked', () => {
    const delay = new RetryDelay(opts, silentLogger());
    expect(waits(delay, ['blocked', 'blocked', 'failed'])).toEqual([1_000, 1_000, 400]);
  });

  it('backs off up to brokenRetryMaxMs after three broken or brief links in a row, until one serves', () => {
    const delay = new RetryDelay(opts, silentLogger());
    expect(waits(delay, ['broke', 'brief', 'broke', 'broke', 'broke', 'broke', 'was-up'])).toEqual([
      100, 100, 800, 1_600, 3_200, 3_200, 100,
    ]);
  });
});

describe('endOfLink', () => {
  it('tells a broken link from a brief one and from one that served', () => {
    expect(endOfLink(60_000, new ProtocolError('bad frame'))).toBe('broke');
    expect(endOfLink(500, undefined)).toBe('brief');
    expect(endOfLink(5_000, new Error('closed'))).toBe('was-up');
  });
});
