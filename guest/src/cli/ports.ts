// `tether-guest ports`: one scan of the guest's listening sockets, as a table or JSON (a debugging aid).
import { silentLogger } from '../log.js';
import { DnatSource, type Listener, listenerKey, scanOnce } from '../ports/index.js';

function hostPort(l: Listener): string {
  return l.family === 6 ? `[${l.ip}]:${l.port}` : `${l.ip}:${l.port}`;
}

function formatPortsTable(listeners: Listener[]): string {
  const rows = [['PROTO', 'ADDRESS', 'PID', 'COMMAND']];
  for (const l of listeners) {
    rows.push([`${l.proto}${l.family}`, hostPort(l), l.pid === null ? '-' : String(l.pid), l.command ?? '-']);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '))
    .join('\n');
}

/** The sockets, and as root the ports DNAT rules publish (a socket at the same address wins), as the agent sees them. */
export async function printPorts(json: boolean): Promise<void> {
  const listeners = scanOnce();
  if (process.getuid?.() === 0) {
    const taken = new Set(listeners.map(listenerKey));
    const dnat = await new DnatSource({ log: silentLogger }).readOnce();
    listeners.push(...dnat.filter((l) => !taken.has(listenerKey(l))));
  }
  process.stdout.write(json ? `${JSON.stringify(listeners, null, 2)}\n` : `${formatPortsTable(listeners)}\n`);
}
