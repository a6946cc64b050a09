// An in-process ssh2 Server with a Client connected to it over loopback: the guest end of forwarding channels for
// tests that need real SSH framing, windows and closes but no sshd. The server accepts any password.
import type net from 'node:net';
import { Client, type Connection, Server, type ServerChannel, utils } from 'ssh2';

export interface Ssh2Pair {
  client: Client;
  /** The server side of the SSH connection, to cut it. */
  conn: Connection;
  close(): Promise<void>;
}

export interface GuestHandlers {
  /** A direct-tcpip open; `accept` answers it, `reject` refuses it. */
  tcpip?: (accept: () => ServerChannel, reject: () => void) => void;
  /** A direct-streamlocal open, with the socket path asked for. */
  streamlocal?: (accept: () => ServerChannel, reject: () => void, socketPath: string) => void;
}

// ssh2's key generator strips every leading zero byte of the ed25519 public key, so about one key in 256 comes out
// malformed and ssh2's own parser rejects it. Draw until the key parses.
function parsableHostKey(): string {
  for (;;) {
    const key = utils.generateKeyPairSync('ed25519').private;
    if (!(utils.parseKey(key) instanceof Error)) return key;
  }
}

export async function ssh2Pair(guest: GuestHandlers): Promise<Ssh2Pair> {
  const hostKey = parsableHostKey();
  let conn: Connection | undefined;
  const server = new Server({ hostKeys: [hostKey] }, (c) => {
    conn = c;
    c.on('error', () => {});
    c.on('authentication', (ctx) => ctx.accept());
    c.on('ready', () => {
      c.on('tcpip', (accept, reject) => (guest.tcpip ? guest.tcpip(accept, reject) : reject()));
      c.on('openssh.streamlocal', (accept, reject, info) =>
        guest.streamlocal ? guest.streamlocal(accept, reject, info.socketPath) : reject(),
      );
    });
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
  const client = new Client();
  client.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', reject);
    client.connect({ host: '127.0.0.1', port, username: 'test', password: 'test' });
  });
  return {
    client,
    conn: conn as Connection,
    async close() {
      client.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
