import type { Listener } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import { listenerId } from './ids.js';
import { ListenerUpdates } from './listener-updates.js';

const tcp = (port: number, pid = 1): Listener => ({
  proto: 'tcp',
  family: 4,
  ip: '127.0.0.1',
  port,
  pid,
  command: 'server',
});

/** A sink that takes a tick per apply and records what it was given, and whether two applies ever overlapped. */
function recordingSink() {
  const calls: { kind: 'snapshot' | 'delta'; added: string[]; removed: string[] }[] = [];
  let busy = false;
  let overlapped = false;
  const apply = async (call: (typeof calls)[number]) => {
    if (busy) overlapped = true;
    busy = true;
    calls.push(call);
    await new Promise((r) => setTimeout(r, 5));
    busy = false;
  };
  return {
    calls,
    overlapped: () => overlapped,
    sink: {
      snapshot: (ls: readonly Listener[]) => apply({ kind: 'snapshot', added: ls.map(listenerId), removed: [] }),
      delta: (d: { added: Listener[]; removed: Listener[] }) =>
        apply({ kind: 'delta', added: d.added.map(listenerId), removed: d.removed.map(listenerId) }),
    },
  };
}

const settle = () => new Promise((r) => setTimeout(r, 50));

describe('ListenerUpdates', () => {
  it('applies one update at a time and merges a flood of deltas into one', async () => {
    const rec = recordingSink();
    const updates = new ListenerUpdates(rec.sink, 100, (err) => {
      throw err;
    });
    updates.pushDelta({ added: [tcp(1)], removed: [] });
    // While the first applies: 1,000 deltas that add and remove the same 50 listeners, then leave port 7 added.
    for (let i = 0; i < 500; i++) {
      updates.pushDelta({ added: [...Array(50)].map((_, p) => tcp(100 + p)), removed: [] });
      updates.pushDelta({ added: [], removed: [...Array(50)].map((_, p) => tcp(100 + p)) });
    }
    updates.pushDelta({ added: [tcp(7)], removed: [] });
    await settle();
    expect(rec.overlapped()).toBe(false);
    expect(rec.calls).toHaveLength(2);
    expect(rec.calls[0]).toEqual({ kind: 'delta', added: ['tcp/127.0.0.1:1'], removed: [] });
    // Added then removed: removed (nothing to the engine, which never saw them); port 7 added.
    expect(rec.calls[1].added).toEqual(['tcp/127.0.0.1:7']);
    expect(rec.calls[1].removed).toHaveLength(50);
  });

  it('keeps a listener removed and added again as both (its socket replaced), and a later snapshot replaces all', async () => {
    const rec = recordingSink();
    const updates = new ListenerUpdates(rec.sink, 100, (err) => {
      throw err;
    });
    const first = updates.pushSnapshot([tcp(1)]);
    updates.pushDelta({ added: [], removed: [tcp(2)] });
    updates.pushDelta({ added: [tcp(2, 9)], removed: [] });
    await settle();
    expect(rec.calls[1]).toEqual({ kind: 'delta', added: ['tcp/127.0.0.1:2'], removed: ['tcp/127.0.0.1:2'] });

    rec.calls.length = 0;
    updates.pushDelta({ added: [tcp(3)], removed: [] }); // being applied
    updates.pushDelta({ added: [tcp(4)], removed: [] }); // pending: replaced by the snapshot
    const second = updates.pushSnapshot([tcp(5)]);
    updates.pushDelta({ added: [tcp(6)], removed: [] });
    await Promise.all([first, second]);
    await settle();
    expect(rec.calls.map((c) => [c.kind, ...c.added])).toEqual([
      ['delta', 'tcp/127.0.0.1:3'],
      ['snapshot', 'tcp/127.0.0.1:5'],
      ['delta', 'tcp/127.0.0.1:6'],
    ]);
  });

  it('leaves out listeners added past its limit while pending, and drops what is pending on clear', async () => {
    const rec = recordingSink();
    const updates = new ListenerUpdates(rec.sink, 3, (err) => {
      throw err;
    });
    updates.pushDelta({ added: [tcp(1)], removed: [] });
    updates.pushDelta({ added: [2, 3, 4, 5, 6].map((p) => tcp(p)), removed: [] });
    expect(updates.dropped).toBe(2);
    await settle();
    expect(rec.calls[1].added).toEqual(['tcp/127.0.0.1:2', 'tcp/127.0.0.1:3', 'tcp/127.0.0.1:4']);

    rec.calls.length = 0;
    updates.pushDelta({ added: [tcp(7)], removed: [] });
    updates.pushDelta({ added: [tcp(8)], removed: [] });
    updates.clear();
    await settle();
    expect(rec.calls.map((c) => c.added)).toEqual([['tcp/127.0.0.1:7']]);
  });

  it('reports a failed apply and goes on with the next', async () => {
    const errors: string[] = [];
    let n = 0;
    const applied: number[] = [];
    const updates = new ListenerUpdates(
      {
        snapshot: () => Promise.resolve(),
        delta: async (d) => {
          if (n++ === 0) throw new Error('bind failed');
          applied.push(d.added[0].port);
        },
      },
      10,
      (err) => errors.push(err.message),
    );
    updates.pushDelta({ added: [tcp(1)], removed: [] });
    updates.pushDelta({ added: [tcp(2)], removed: [] });
    await settle();
    expect(errors).toEqual(['bind failed']);
    expect(applied).toEqual([2]);
  });
});
