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
    const gate = new OpenGate(2);
    const opens = [deferred(), deferred(), deferred(), deferred()];
    const started: number[] = [];
    const outcomes = opens.map((d, i) =>
      gate
        .run(() => {
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
      gate.run(() => {
        throw new Error('not connected');
      }),
    ).rejects.toThrow('not connected');
    await expect(gate.run(async () => 'next')).resolves.toBe('next');
  });

  it('clear() fails the waiting opens with the reason and leaves the ones in flight alone', async () => {
    const gate = new OpenGate(1);
    const first = deferred();
    const inFlight = gate.run(() => first.promise);
    const waiting = gate.run(async () => 'never');
    gate.clear('the forward engine stopped');
    await expect(waiting).rejects.toThrow('the forward engine stopped');
    first.resolve('done');
    await expect(inFlight).resolves.toBe('done');
    expect(gate.counts).toEqual({ active: 0, waiting: 0 });
  });

  it('stops counting an open the guest leaves hanging, so the next one starts', async () => {
    const gate = new OpenGate(1, 30);
    const stuck = deferred();
    const next = deferred();
    const started: string[] = [];
    void gate.run(() => {
      started.push('stuck');
      return stuck.promise;
    });
    const second = gate.run(() => {
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

  it('refuses a limit that is not a positive integer', () => {
    expect(() => new OpenGate(0)).toThrow('positive integer, got 0');
  });
});
