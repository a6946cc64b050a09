import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { TableAnchors } from './anchors.js';

/** States of the rows, in both TCP tables, whose local and remote ports are `local` and `remote` (0: any). */
function statesAt(local: number, remote: number): string[] {
  const port = (address: string) => Number.parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
  return ['tcp', 'tcp6'].flatMap((table) =>
    readFileSync(`/proc/net/${table}`, 'latin1')
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f.length > 3 && port(f[1]) === local && (remote === 0 || port(f[2]) === remote))
      .map((f) => f[3]),
  );
}

let anchors: TableAnchors | null = null;
afterEach(() => anchors?.close());

describe('TableAnchors', () => {
  it('keeps a few established loopback connections per family', async () => {
    anchors = await TableAnchors.open(silentLogger);
    // 3 per family; IPv6 may be missing where the kernel has no ::1.
    expect(anchors.count).toBeGreaterThanOrEqual(3);
    expect(anchors.count).toBeLessThanOrEqual(6);
    for (const { client, server } of anchors.ports) {
      expect(statesAt(client, server), `client end ${client}`).toEqual(['01']);
      expect(statesAt(server, client), `server end ${server}`).toEqual(['01']);
    }
  });

  it('leaves no listener behind, and nothing of its connections once closed (no TIME_WAIT)', async () => {
    anchors = await TableAnchors.open(silentLogger);
    const ports = anchors.ports;
    for (const { server } of ports) expect(statesAt(server, 0), `server port ${server}`).not.toContain('0A');
    anchors.close();
    const left = () =>
      ports.flatMap(({ client, server }) => [...statesAt(client, server), ...statesAt(server, client)]);
    const deadline = Date.now() + 5000;
    while (left().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(left()).toEqual([]);
  });
});
