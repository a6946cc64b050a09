// A unix forward's host socket closed while its guest service is down and opened again when it is back, including when
// another program took the path meanwhile (logged, and tried again on the next word that the service listens).
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { SshSession } from '../ssh/index.js';
import { UnixBinding } from './unix.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function binding() {
  const dir = mkdtempSync(join(tmpdir(), 'tether-unix-'));
  dirs.push(dir);
  const errors: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void errors.push(JSON.parse(line).msg) });
  const path = join(dir, 'docker.sock');
  const forward = { stats: { connections: 0, bytesIn: 0, bytesOut: 0 }, opened: () => undefined };
  const b = new UnixBinding(path, '/var/run/docker.sock', forward, { ssh: {} as SshSession, log });
  return { b, path, errors };
}

describe('UnixBinding.accepting', () => {
  it('removes the host socket while the guest service is down and makes it again (mode 0600) when it is back', async () => {
    const { b, path } = binding();
    await b.listen();
    expect(statSync(path).isSocket()).toBe(true);
    await b.accepting(false);
    expect(existsSync(path)).toBe(false);
    await b.accepting(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await b.close();
    expect(existsSync(path)).toBe(false);
  });

  it('logs a path another program took meanwhile, and takes it on the next word once it is free', async () => {
    const { b, path, errors } = binding();
    await b.listen();
    await b.accepting(false);
    const other = net.createServer().listen(path);
    await new Promise((r) => other.once('listening', r));
    await b.accepting(true);
    expect(errors.at(-1)).toBe(`cannot listen on ${path} again: another process is already serving ${path}`);
    await new Promise((r) => other.close(r));
    await b.accepting(true);
    expect(statSync(path).isSocket()).toBe(true);
    expect(errors.at(-1)).toBe(`host socket ${path} accepts again`);
    await b.close();
  });

  it('stays closed when it is closed for good while a reopen is under way', async () => {
    const { b, path } = binding();
    await b.listen();
    await b.accepting(false);
    const reopened = b.accepting(true);
    await b.close();
    await reopened;
    expect(existsSync(path)).toBe(false);
  });
});
