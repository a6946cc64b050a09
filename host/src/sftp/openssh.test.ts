// Conformance with the real OpenSSH `sftp` client: it connects over `-D "socat - UNIX-CONNECT:<sock>"` to a unix
// socket served in-process by serveSftp().
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SftpServerOptions, type SftpSession, serveSftp } from './server.js';

let tmp: string;
let root: string;
let local: string;
const servers: Server[] = [];
const sessions: SftpSession[] = [];

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function listen(opts: Omit<SftpServerOptions, 'root'> = {}): Promise<string> {
  const sock = join(tmp, `sftp-${servers.length}.sock`);
  const server = createServer((socket) => sessions.push(serveSftp(socket, { root, ...opts })));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  return sock;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function sftpBatch(sock: string, commands: string[]): Promise<Run> {
  const batch = join(tmp, `batch-${Date.now()}-${Math.random()}`);
  await fsp.writeFile(batch, `${commands.join('\n')}\n`);
  return new Promise((resolve) => {
    execFile(
      'sftp',
      ['-b', batch, '-D', `socat - UNIX-CONNECT:${sock}`],
      { cwd: local, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
  });
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'tether-sftp-openssh-'));
  root = join(tmp, 'export');
  local = join(tmp, 'local');
  await fsp.mkdir(root);
  await fsp.mkdir(local);
});

afterAll(async () => {
  for (const s of sessions) s.close('test done');
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('OpenSSH sftp client', () => {
  it('puts, gets, lists, renames, links, chmods, dfs and removes', async () => {
    const payload = randomBytes(5 * 1024 * 1024 + 123);
    await fsp.writeFile(join(local, 'payload.bin'), payload);
    const sock = await listen();
    const run = await sftpBatch(sock, [
      'pwd',
      'put payload.bin up.bin',
      'get up.bin down.bin',
      'mkdir d',
      'rename up.bin d/moved.bin',
      'ln -s moved.bin d/link',
      'chmod 600 d/moved.bin',
      'ls -l d',
      'df .',
      'mkdir gone',
      'rmdir gone',
      'put payload.bin d/extra.bin',
      'rm d/extra.bin',
    ]);
    expect(run.stderr).not.toMatch(/Couldn't|failure|denied/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Remote working directory: ${root}`);
    expect(sha256(await fsp.readFile(join(local, 'down.bin')))).toBe(sha256(payload));
    expect(sha256(await fsp.readFile(join(root, 'd', 'moved.bin')))).toBe(sha256(payload));
    expect(await fsp.readlink(join(root, 'd', 'link'))).toBe('moved.bin');
    expect((await fsp.stat(join(root, 'd', 'moved.bin'))).mode & 0o777).toBe(0o600);
    expect(run.stdout).toMatch(/-rw-------\s+1 \d+\s+\d+\s+5243003 .* moved\.bin/);
    // df prints Size/Used/Avail from statvfs; the sizes come from the real filesystem.
    expect(run.stdout).toMatch(/Size\s+Used\s+Avail/);
    await expect(fsp.readdir(root)).resolves.toEqual(['d']);
    expect((await fsp.readdir(join(root, 'd'))).sort()).toEqual(['link', 'moved.bin']);
  });

  it('cannot reach files outside the export', async () => {
    const sock = await listen();
    const run = await sftpBatch(sock, ['-get /etc/passwd stolen', '-get ../../etc/passwd stolen', 'ls /etc']);
    expect(run.code).not.toBe(0);
    // The client reports a failed glob stat as "not found"; the server's refusal is checked in server.test.ts.
    expect(run.stderr).toMatch(/not found|Permission denied/i);
    await expect(fsp.stat(join(local, 'stolen'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses writes on a read-only export', async () => {
    await fsp.writeFile(join(local, 'small.txt'), 'small');
    const sock = await listen({ readOnly: true });
    const run = await sftpBatch(sock, ['-put small.txt small.txt', '-mkdir nope', 'ls']);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/Permission denied/i);
    await expect(fsp.stat(join(root, 'small.txt'))).rejects.toThrow(/ENOENT/);
    await expect(fsp.stat(join(root, 'nope'))).rejects.toThrow(/ENOENT/);
  });
});
