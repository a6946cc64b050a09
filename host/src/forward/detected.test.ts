// Guest listeners reconciled into detected forwards (detected.ts) through the engine: snapshots and deltas, the caps,
// the processes forwards show, and two listeners of one port sharing its host bindings.
import net from 'node:net';
import type { Listener } from '@tether/protocol';
import { describe, expect, it, vi } from 'vitest';
import {
  detectedWithConnection,
  echo,
  engineEachTest,
  freePort,
  lines,
  makeEngine,
  tcp,
  tried,
} from '../../../test/helpers/forward-engine.js';
import type { ForwardView } from '../model.js';
import type { ForwardEngine } from './engine.js';

describe('ForwardEngine detected forwards', () => {
  let engine: ForwardEngine;
  engineEachTest(() => engine);

  it('reconciles a fresh snapshot after suspension: kept forwards keep their listeners, gone ones close', async () => {
    engine = makeEngine();
    const [a, b] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('0.0.0.0', b), tcp('::', b)]);
    // Listed by guest port, then id.
    const byPort = [
      [a, [`tcp/127.0.0.1:${a} forwarding`]],
      [b, [`tcp/0.0.0.0:${b} forwarding`, `tcp/[::]:${b} forwarding`].sort((x, y) => x.localeCompare(y))],
    ] as const;
    expect(engine.views().map((v) => `${v.id} ${v.state}`)).toEqual(
      [...byPort].sort((x, y) => x[0] - y[0]).flatMap(([, rows]) => rows),
    );
    expect(await echo(a)).toBe('hi');

    engine.suspendDetected('test');
    expect(engine.views().every((v) => v.state === 'suspended')).toBe(true);
    expect(await echo(a)).toBe('hi'); // listeners stay bound while suspended

    await engine.setListeners([tcp('127.0.0.1', a)]);
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[`tcp/127.0.0.1:${a}`, 'forwarding']]);
    expect(await echo(a)).toBe('hi');
    await expect(echo(b)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const forwardingLogs = lines.filter((l) => l.msg.includes(`127.0.0.1:${a}`) && l.msg.endsWith(': forwarding'));
    expect(forwardingLogs).toHaveLength(2); // once at creation, once after resuming
  });

  it('shows on each of two guest listeners of one port (127.0.0.1 and ::1) the host address that reaches it', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port), { ...tcp('::1', port), pid: 43 }]);
    const rows = () => engine.views().map((v) => [v.id, v.hostAddrs]);
    expect(rows()).toEqual([
      [`tcp/[::1]:${port}`, [`[::1]:${port}`]],
      [`tcp/127.0.0.1:${port}`, [`127.0.0.1:${port}`]],
    ]);
    tried.length = 0;
    expect(await echo(port)).toBe('hi');
    expect(await echo(port, '::1')).toBe('hi');
    expect(tried).toEqual(['127.0.0.1', '::1']);
    // With one of them gone, the other is reached from both, and watchers hear of it.
    const changes: ForwardView[] = [];
    engine.on('change', (v: ForwardView) => changes.push(v));
    await engine.setListeners([tcp('127.0.0.1', port)]);
    expect(rows()).toEqual([[`tcp/127.0.0.1:${port}`, [`127.0.0.1:${port}`, `[::1]:${port}`]]]);
    expect(changes.at(-1)).toMatchObject({
      id: `tcp/127.0.0.1:${port}`,
      hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    });
  });

  it('gives a listener whose process changed a new since (a restarted server, a rebooted guest)', async () => {
    engine = makeEngine();
    const port = await freePort();
    const id = `udp/127.0.0.1:${port}`;
    const udp = (pid: number): Listener => ({ ...tcp('127.0.0.1', port), proto: 'udp', pid });
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(new Date('2026-01-01T00:00:00Z'));
      await engine.setListeners([udp(193)]);
      expect(engine.view(id)?.since).toBe('2026-01-01T00:00:00.000Z');
      vi.setSystemTime(new Date('2026-01-01T00:28:00Z'));
      await engine.setListeners([udp(193)]);
      expect(engine.view(id)?.since).toBe('2026-01-01T00:00:00.000Z');
      await engine.setListeners([udp(211)]);
      expect(engine.view(id)).toMatchObject({ since: '2026-01-01T00:28:00.000Z', process: { pid: 211 } });
    } finally {
      vi.useRealTimers();
    }
  });

  it('caps detected forwards with a single warning', async () => {
    engine = makeEngine(3);
    const base = await freePort();
    const many = Array.from({ length: 50 }, (_, i) => ({ ...tcp('127.0.0.1', base + i) }));
    await engine.setListeners(many);
    expect(engine.views()).toHaveLength(3);
    expect(engine.capped).toBe(47);
    expect(lines.filter((l) => l.msg.includes('maxForwards'))).toHaveLength(1);
  });

  it('does not let ignored listeners take the slots of forwarded ones', async () => {
    engine = makeEngine(2);
    const port = await freePort();
    // The guest's sshd and non-loopback listeners are ignored; they count against a cap of their own.
    await engine.setListeners([tcp('127.0.0.1', 22), tcp('10.0.0.1', 80), tcp('10.0.0.2', 80), tcp('127.0.0.1', port)]);
    expect(engine.view(`tcp/127.0.0.1:${port}`)?.state).toBe('forwarding');
    expect(engine.views().filter((v) => v.state === 'ignored')).toHaveLength(2);
    expect(engine.capped).toBe(1); // the third ignored one
    expect(lines.filter((l) => l.msg.includes('maxForwards'))).toHaveLength(1);
  });

  it('bounds the listeners it remembers from deltas, with one warning', async () => {
    engine = makeEngine(2); // remembers 4 × 2
    const base = await freePort();
    for (let round = 0; round < 3; round++) {
      const added = Array.from({ length: 10 }, (_, i) => tcp('10.0.0.1', base + round * 10 + i));
      await engine.applyDelta({ added, removed: [] });
    }
    expect(engine.views().length + engine.capped).toBe(8);
    expect(lines.filter((l) => l.msg.includes('listeners; the rest are not tracked'))).toHaveLength(1);
  });

  it('forwards a capped listener once a forwarded one goes', async () => {
    engine = makeEngine(2);
    const [a, b, c] = [await freePort(), await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('127.0.0.1', b), tcp('127.0.0.1', c)]);
    expect(engine.capped).toBe(1);
    const capped = [a, b, c].find((p) => !engine.view(`tcp/127.0.0.1:${p}`))!;
    const gone = [a, b, c].find((p) => p !== capped)!;
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', gone)] });
    await expect.poll(() => engine.view(`tcp/127.0.0.1:${capped}`)?.state).toBe('forwarding');
    expect(engine.capped).toBe(0);
    expect(await echo(capped)).toBe('hi');
  });

  it('keeps the host listener of an address whose guest socket was replaced within one delta (SO_REUSEPORT)', async () => {
    engine = makeEngine();
    const { port, id, held } = await detectedWithConnection(engine);
    lines.length = 0;
    const next = { ...tcp('0.0.0.0', port), pid: 43, command: 'worker 2' };
    await engine.applyDelta({ added: [next], removed: [tcp('0.0.0.0', port)] });
    expect(engine.view(id)).toMatchObject({ state: 'forwarding', process: { pid: 43, command: 'worker 2' } });
    expect(lines.filter((l) => l.msg.includes(id) && /removed|bound|listening/.test(l.msg))).toEqual([]);
    // The host socket was never closed: a second host listener on the port is still refused.
    await expect(
      new Promise((resolve, reject) =>
        net
          .createServer()
          .once('error', reject)
          .listen(port, '127.0.0.1', () => resolve('bound')),
      ),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    held.destroy();
    expect(await echo(port)).toBe('hi');
  });
});
