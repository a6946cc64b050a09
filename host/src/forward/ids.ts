// Forward ids: a forward is named by its guest side (`tcp/127.0.0.1:8080`, `unix//var/run/docker.sock`), so a guest
// listener and the static or added forward of its port meet under one id.
import { formatAddr } from '../address.js';

/** A guest port of a protocol, whatever its address (`tcp/8080`): what `forward rm` of a port applies to. */
export function portKey(proto: string, port: number): string {
  return `${proto}/${port}`;
}

export function listenerId(l: { proto: string; ip: string; port: number }): string {
  return `${l.proto}/${formatAddr(l.ip, l.port)}`;
}

/**
 * Static and runtime forwards share the id of the guest listener when they use the same host port (they take its
 * place); one to another host port is a forward of its own beside the detected one. `hostIP` qualifies the id with
 * the one host address: the caller asks for it only when the plain id is another explicit forward's (the same guest
 * port on a second host address).
 */
export function explicitId(proto: string, ip: string, guestPort: number, hostPort: number, hostIP?: string): string {
  const id = listenerId({ proto, ip, port: guestPort });
  if (hostIP) return `${id}->${formatAddr(hostIP, hostPort)}`;
  return hostPort === guestPort ? id : `${id}->${hostPort}`;
}

/**
 * A unix forward is named by its guest socket; `hostSocket` qualifies the id of a second forward of the same guest
 * socket to another host path (the caller asks for it only when the plain id is taken).
 */
export function unixId(guestSocket: string, hostSocket?: string): string {
  return hostSocket ? `unix/${guestSocket}->${hostSocket}` : `unix/${guestSocket}`;
}
