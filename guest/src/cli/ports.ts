// `tether-guest ports`: one scan of the guest's listening sockets, as a table or JSON (a debugging aid).
import { type Listener, scanOnce } from '../ports/index.js';

function hostPort(l: Listener): string {
  return l.family === 6 ? `[${l.ip}]:${l.port}` : `${l.ip}:${l.port}`;
}

export function formatPortsTable(listeners: Listener[]): string {
  const rows = [['PROTO', 'ADDRESS', 'PID', 'COMMAND']];
  for (const l of listeners) {
    rows.push([`${l.proto}${l.family}`, hostPort(l), l.pid === null ? '-' : String(l.pid), l.command ?? '-']);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '))
    .join('\n');
}

export function printPorts(json: boolean): void {
  const listeners = scanOnce();
  process.stdout.write(json ? `${JSON.stringify(listeners, null, 2)}\n` : `${formatPortsTable(listeners)}\n`);
}
