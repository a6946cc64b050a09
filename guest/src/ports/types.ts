// The listener record the port scanner produces. Owns only the data shape and its identity key; knows nothing of
// how listeners are found or sent anywhere.

export interface Listener {
  proto: 'tcp' | 'udp';
  family: 4 | 6;
  /** Canonical address text: `127.0.0.1`, `0.0.0.0`, `::1`, `::`, `::ffff:127.0.0.1`, RFC 5952 for the rest. */
  ip: string;
  port: number;
  /** Socket inode from /proc/net/*; links the listener to the process holding `socket:[inode]`. */
  inode: number;
  uid: number;
  /** Owning process, when it could be found (it may have exited, or be unreadable). */
  pid: number | null;
  /** The owner's command line (NULs as spaces), at most 256 bytes. */
  command: string | null;
  /** The owner's descriptor for the socket, while it is worth probing (liveness.ts); stays in the guest. */
  fd?: number;
}

/** One listener per key: SO_REUSEPORT sockets sharing an address collapse into one entry. */
export function listenerKey(l: Pick<Listener, 'proto' | 'ip' | 'port'>): string {
  return `${l.proto}/${l.ip}/${l.port}`;
}
