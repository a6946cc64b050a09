// A session whose VM stays away keeps trying, but logs a failed attempt once per reason and then a count once a
// minute: a VM shut down for a weekend must not fill the log (and rotate its history away) with one line per try.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/helpers/wait.js';
import { SshConfig } from '../config/schema.js';
import { SshSession } from './session.js';

describe('SshSession retrying a VM that stays away', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  it('logs the first failed attempt of each reason, not every attempt', async () => {
    // A server that closes every connection at once: each attempt fails alike, within milliseconds.
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const dir = mkdtempSync(join(tmpdir(), 'tether-retry-log-'));
    const key = join(dir, 'id');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const lines: { msg: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const ssh = SshConfig.parse({ host: '127.0.0.1', port, user: 'u', identityFile: key, useAgent: false });
    const session = new SshSession({ ssh, instanceDir: dir, logger, backoffInitialMs: 5, backoffMaxMs: 10 });
    cleanup.push(() => {
      void session.close('test over');
      server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    let retries = 0;
    session.on('retrying', () => retries++);
    session.start();
    await waitFor(() => retries >= 20, { what: '20 failed attempts', timeoutMs: 20_000 });
    const attempts = lines.filter((l) => l.msg.startsWith('ssh attempt failed: '));
    // The first failure is the `connecting` state's own line; the second is the first of the repeated ones.
    expect(attempts.length).toBe(1);
    expect(attempts[0].msg).toMatch(/without an SSH banner.*; retry in \d+ ms$/);
  });
});
