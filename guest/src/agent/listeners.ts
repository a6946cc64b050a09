// Converts the scanner's listener records to the protocol's `Listener`: only the fields the host may see (the socket
// inode and uid stay in the guest).
import type { PortDelta, PortSnapshot, Listener as WireListener } from '@tether/protocol';
import type { Listener, ScanDelta, ScanSnapshot } from '../ports/index.js';

function toWireListener(l: Listener): WireListener {
  return { proto: l.proto, family: l.family, ip: l.ip, port: l.port, pid: l.pid, command: l.command };
}

export function toWireSnapshot(s: ScanSnapshot): PortSnapshot {
  return { seq: s.seq, listeners: s.listeners.map(toWireListener) };
}

export function toWireDelta(d: ScanDelta): PortDelta {
  return { seq: d.seq, added: d.added.map(toWireListener), removed: d.removed.map(toWireListener) };
}
