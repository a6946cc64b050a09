import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BootRequirements } from './requirements.js';

describe('BootRequirements', () => {
  it('shows how long a requirement has been waiting while it still waits, and its final time once met', async () => {
    const reqs = new BootRequirements(4, pino({ level: 'silent' }), () => {});
    let finish!: () => void;
    const running = reqs.run(1, () => new Promise<string>((resolve) => (finish = () => resolve('answered'))));
    const start = performance.now();
    await expect.poll(() => reqs.views()[0].elapsedMs, { timeout: 2_000 }).toBeGreaterThanOrEqual(50);
    expect(reqs.views()[0]).toMatchObject({ state: 'waiting' });
    finish();
    await running;
    const met = reqs.views()[0];
    expect(met).toMatchObject({ state: 'ok', detail: 'answered' });
    expect(met.elapsedMs).toBeGreaterThanOrEqual(50);
    expect(met.elapsedMs).toBeLessThanOrEqual(Math.ceil(performance.now() - start) + 1);
    // Not counting on after the outcome.
    const later = met.elapsedMs;
    await new Promise((r) => setTimeout(r, 20));
    expect(reqs.views()[0].elapsedMs).toBe(later);
  });
});
