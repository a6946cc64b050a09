// An SSH session against loopback TCP servers that are not sshd: one that takes the connection and says nothing,
// one that closes it at once, one that resets it. Each attempt's reason must say that no SSH banner came, not ssh2's "Connection lost
// before handshake".
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SshConfig } from '../config/schema.js';
import { silentLogger } from '../log.js';
import { SshSession } from './session.js';

describe('SshSession against a server that sends no SSH banner', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  async function serve(onConnection: (s: net.Socket) => void): Promise<number> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      onConnection(s);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    return (server.address() as net.AddressInfo).port;
  }

  async function firstRetry(port: number): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), 'tether-no-banner-'));
    const key = join(dir, 'id');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const ssh = SshConfig.parse({ host: '127.0.0.1', port, user: 'u', identityFile: key, useAgent: false });
    const session = new SshSession({ ssh, instanceDir: dir, logger: silentLogger(), readyTimeoutMs: 1_000 });
    cleanup.push(() => {
      void session.close('test over');
      rmSync(dir, { recursive: true, force: true });
    });
    const reason = new Promise<string>((resolve) => session.once('retrying', resolve));
    session.start();
    return reason;
  }

  it('says the server took the connection and sent nothing', async () => {
    const port = await serve(() => {});
    expect(await firstRetry(port)).toBe(
      `u@127.0.0.1:${port} took the connection but sent no SSH banner in 1 s: not an SSH server, ` +
        'or an sshd that hangs (a VM still booting?)',
    );
  });

  it('says the same of a server that resets the connection (QEMU hostfwd while the guest sshd is down)', async () => {
    const port = await serve((s) => s.resetAndDestroy());
    expect(await firstRetry(port)).toMatch(
      new RegExp(`^u@127\\.0\\.0\\.1:${port} closed the connection without an SSH banner: not an SSH server`),
    );
  });

  it('says the server closed the connection without a banner', async () => {
    const port = await serve((s) => s.end());
    expect(await firstRetry(port)).toMatch(
      new RegExp(`^u@127\\.0\\.0\\.1:${port} closed the connection without an SSH banner: not an SSH server`),
    );
  });
});
