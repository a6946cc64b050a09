import { describe, expect, it } from 'vitest';
import { OpenGate } from './open-gate.js';

/** An open the test settles by hand. */
function deferred<T = string>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const settled = () => new Promise((r) => setImmediate(r));

describe('OpenGate', () => {
  it('starts opens below the limit in the same tick and holds the rest in arrival order', async () => {
    const gate = new OpenGate(8);
    const opens = [deferred(), deferred(), deferred(), deferred()];
    const started: number[] = [];
    const outcomes = opens.map((d, i) =>
      gate
        .run('a', () => {
          started.push(i);
          return d.promise;
        })
        .then(
          (value) => value,
          (err: Error) => `failed: ${err.message}`,
        ),
    );
    expect(started).toEqual([0, 1]);
    expect(gate.counts).toEqual({ active: 2, waiting: 2 });
    opens[1].resolve('b');
    await settled();
    expect(started).toEqual([0, 1, 2]);
    opens[0].reject(new Error('refused'));
    await settled();
    expect(started).toEqual([0, 1, 2, 3]);
    opens[2].resolve('c');
    opens[3].resolve('d');
    expect(await Promise.all(outcomes)).toEqual(['failed: refused', 'b', 'c', 'd']);
    expect(gate.counts).toEqual({ active: 0, waiting: 0 });
  });

  it('frees the slot of an open that throws synchronously', async () => {
    const gate = new OpenGate(1);
    await expect(
      gate.run('a', () => {
        throw new Error('not connected');
      }),
    ).rejects.toThrow('not connected');
    await expect(gate.run('a', async () => 'next')).resolves.toBe('next');
  });

  it('clear() fails the waiting opens with the reason and leaves the ones in flight alone', async () => {
    const gate = new OpenGate(1);
    const first = deferred();
    const inFlight = gate.run('a', () => first.promise);
    const waiting = gate.run('a', async () => 'never');
    gate.clear('the forward engine stopped');
    await expect(waiting).rejects.toThrow('the forward engine stopped');
    first.resolve('done');
    await expect(inFlight).resolves.toBe('done');
    expect(gate.counts).toEqual({ active: 0, waiting: 0 });
  });

  it('stops counting an open the guest leaves hanging, so the next one starts', async () => {
    const gate = new OpenGate(1, { slowMs: 30 });
    const stuck = deferred();
    const next = deferred();
    const started: string[] = [];
    void gate.run('a', () => {
      started.push('stuck');
      return stuck.promise;
    });
    const second = gate.run('a', () => {
      started.push('next');
      return next.promise;
    });
    expect(started).toEqual(['stuck']);
    await expect.poll(() => started).toEqual(['stuck', 'next']);
    next.resolve('ok');
    expect(await second).toBe('ok');
    // The hung open settling late releases nothing twice.
    stuck.resolve('late');
    await settled();
    expect(gate.counts).toEqual({ active: 0, waiting: 0 });
  });

  it('keeps a target whose opens hang to a quarter of the slots, and gives freed slots to the targets in turn', async () => {
    const gate = new OpenGate(8);
    const hung = Array.from({ length: 4 }, () => deferred());
    const started: string[] = [];
    const run = (target: string, d: ReturnType<typeof deferred<string>>) =>
      gate.run(target, () => {
        started.push(target);
        return d.promise;
      });
    for (const d of hung) void run('stuck', d).catch(() => {});
    // The stuck target has its two slots (a quarter of 8); its next opens wait, the other target's start at once.
    const more = deferred();
    void run('stuck', more).catch(() => {});
    const healthy = deferred();
    const served = run('healthy', healthy);
    expect(started).toEqual(['stuck', 'stuck', 'healthy']);
    healthy.resolve('ok');
    expect(await served).toBe('ok');
    expect(gate.counts).toEqual({ active: 2, waiting: 3 });
    hung[0].resolve('late');
    await settled();
    expect(started).toEqual(['stuck', 'stuck', 'healthy', 'stuck']);
  });

  it('turns away opens beyond maxWaiting for a target none of whose opens settles', async () => {
    const gate = new OpenGate(4, { maxWaiting: 1, slowMs: 50 }); // one slot per target
    const hung = [deferred(), deferred(), deferred()];
    const runs = hung.map((d) => gate.run('stuck', () => d.promise));
    expect(gate.counts).toEqual({ active: 1, waiting: 2 }); // not yet taken to be stuck: both may wait
    // Each hung open stops counting after slowMs and the next starts; nothing has settled meanwhile.
    await expect.poll(() => gate.counts.waiting, { timeout: 2_000 }).toBe(0);
    const queued = gate.run('stuck', async () => 'queued');
    await expect(gate.run('stuck', async () => 'refused')).rejects.toThrow(
      '1 connections already wait for stuck, which does not answer',
    );
    for (const d of hung) d.resolve('late');
    await Promise.all(runs);
    await expect(queued).resolves.toBe('queued');
  });

  it('turns away an open that waited maxWaitMs for a slot', async () => {
    const gate = new OpenGate(4, { maxWaitMs: 50 });
    const hung = deferred();
    void gate.run('stuck', () => hung.promise);
    await expect(gate.run('stuck', async () => 'never')).rejects.toThrow(
      'no channel to stuck within 0.05 s: it does not answer',
    );
    expect(gate.counts).toEqual({ active: 1, waiting: 0 });
    hung.resolve('done');
    await settled();
    expect(gate.counts).toEqual({ active: 0, waiting: 0 });
  });

  it('lets a burst to a target that answers wait as long as it takes', async () => {
    const gate = new OpenGate(4, { maxWaiting: 1, slowMs: 30 });
    const opens = Array.from({ length: 40 }, (_, i) =>
      gate.run('busy', () => new Promise<number>((resolve) => setTimeout(() => resolve(i), 5))),
    );
    expect(await Promise.all(opens)).toEqual(Array.from({ length: 40 }, (_, i) => i));
  });

  it('refuses a limit that is not a positive integer', () => {
    expect(() => new OpenGate(0)).toThrow('positive integer, got 0');
  });
});
