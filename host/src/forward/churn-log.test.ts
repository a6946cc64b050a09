import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/helpers/wait.js';
import { ChurnLog } from './churn-log.js';

describe('ChurnLog', () => {
  it('lets a forward log a few lines per window, then sums up the rest once the window is over', async () => {
    const lines: { msg: string; level: number; unlogged?: number; forward?: string }[] = [];
    const churn = new ChurnLog(
      pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) }),
      (id) => `forwarding (state of ${id})`,
      3,
      100,
    );
    try {
      const allowed = Array.from({ length: 10 }, () => churn.allow('tcp/127.0.0.1:8080'));
      expect(allowed).toEqual([true, true, true, false, false, false, false, false, false, false]);
      expect(churn.allow('tcp/127.0.0.1:9090')).toBe(true); // each forward has its own window

      const summary = await waitFor(() => lines.find((l) => l.unlogged !== undefined), { what: 'the summary' });
      expect(summary).toMatchObject({ level: 40, forward: 'tcp/127.0.0.1:8080', unlogged: 7 });
      expect(summary.msg).toMatch(/^forward tcp\/127\.0\.0\.1:8080 changed 7 more times in 0\.1 s than were logged: /);
      // Where it ended up: the last line logged for it may be any step of the churn.
      expect(summary.msg).toMatch(/; now: forwarding \(state of tcp\/127\.0\.0\.1:8080\)$/);
      expect(lines).toHaveLength(1); // the quiet forward has nothing to sum up
      expect(churn.allow('tcp/127.0.0.1:8080')).toBe(true); // a new window
    } finally {
      churn.stop();
    }
  });
});
