import { openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HandleBudget, HandleTable } from './handles.js';

const file = () => ({ kind: 'file' as const, fd: openSync('/dev/null', 'r'), path: '/dev/null' });

describe('HandleTable', () => {
  it('shares one budget with the other sessions of the process, on top of its own limit', async () => {
    const budget = new HandleBudget(3);
    const a = new HandleTable(10, budget);
    const b = new HandleTable(10, budget);
    const opened = [a.add(file()), a.add(file())];
    b.ensureRoom();
    b.add(file());
    expect(() => a.ensureRoom()).toThrow(
      /too many open handles in all of this host agent's mounts together \(limit 3\)/,
    );
    expect(() => b.ensureRoom()).toThrow(/limit 3/);
    a.close(opened[0]);
    b.ensureRoom();
    // A session that ends gives back everything it held.
    await a.closeAll();
    expect(budget.open).toBe(1);
    await b.closeAll();
    expect(budget.open).toBe(0);
  });

  it('still refuses beyond its own limit', () => {
    const t = new HandleTable(1, new HandleBudget(100));
    t.add(file());
    expect(() => t.ensureRoom()).toThrow(/too many open handles \(limit 1\)/);
    return t.closeAll();
  });
});
