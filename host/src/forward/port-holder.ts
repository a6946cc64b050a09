// Who holds a busy host TCP address, where the host's kernel lists its sockets (Linux's /proc/net/tcp and tcp6): a
// listener, or only connections from that port (an outgoing one, or one in TIME-WAIT), which no listing of
// listeners shows and which free the port by themselves. Read only when a bind failed; nothing is sent to the holder
// (a probe connection would show up in another program's logs at every retry). Elsewhere (macOS) it is not known.
import { readFile } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';

/** The `st` column of a listening socket. */
const LISTEN = '0A';
const ZERO6 = '0'.repeat(32);

type PortHolder = 'listener' | 'connection';

/**
 * What holds `ip`:`port` for TCP on this host: the sockets on that port whose address overlaps it (the same one, or
 * a wildcard of its family). Null when the kernel does not say (no such table, or no socket found).
 */
export async function tcpPortHolder(ip: string, port: number): Promise<PortHolder | null> {
  const v4 = isIPv4(ip);
  if (!v4 && !isIPv6(ip)) return null;
  const tables: [string, Set<string> | null][] = [
    // null: any address of the table (a wildcard binding overlaps them all).
    ['/proc/net/tcp', v4 ? wildcardOr(ip === '0.0.0.0', ['00000000', procHex4(ip)]) : new Set()],
    [
      '/proc/net/tcp6',
      v4 ? new Set([ZERO6, `0000000000000000FFFF0000${procHex4(ip)}`]) : wildcardOr(ip === '::', [ZERO6, procHex6(ip)]),
    ],
  ];
  let connection = false;
  for (const [table, addresses] of tables) {
    if (addresses?.size === 0) continue;
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      // sl local_address rem_address st ...: local_address is HEXIP:HEXPORT.
      const fields = line.trim().split(/\s+/, 4);
      const local = fields[1];
      const colon = local?.lastIndexOf(':') ?? -1;
      if (colon < 0 || Number.parseInt(local.slice(colon + 1), 16) !== port) continue;
      if (addresses && !addresses.has(local.slice(0, colon).toUpperCase())) continue;
      if (fields[3] === LISTEN) return 'listener';
      connection = true;
    }
  }
  return connection ? 'connection' : null;
}

function wildcardOr(wildcard: boolean, addresses: string[]): Set<string> | null {
  return wildcard ? null : new Set(addresses);
}

/** An IPv4 address as the kernel prints it: its four bytes as one little-endian word (127.0.0.1 → 0100007F). */
function procHex4(ip: string): string {
  return ip
    .split('.')
    .reverse()
    .map((b) => Number(b).toString(16).padStart(2, '0'))
    .join('')
    .toUpperCase();
}

/** An IPv6 address as the kernel prints it: four 32-bit words, each little-endian (::1 → …00000001000000). */
function procHex6(ip: string): string {
  // A dotted tail (::ffff:127.0.0.1) as two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    ip = `${ip.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail = ''] = ip.split('::');
  const groups = (s: string) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(ip.includes('::') ? tail : '');
  const all = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => g.padStart(4, '0'));
  const bytes = all.join('').match(/../g) ?? [];
  let out = '';
  for (let w = 0; w < 4; w++)
    out += bytes
      .slice(w * 4, w * 4 + 4)
      .reverse()
      .join('');
  return out.toUpperCase();
}
