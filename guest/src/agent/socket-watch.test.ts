import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SocketWatch } from './socket-watch.js';

const dirs: string[] = [];
const watches: SocketWatch[] = [];
afterEach(() => {
  for (const w of watches.splice(0)) w.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function listen(path: string): Promise<net.Server> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(path, () => resolve(server));
  });
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('SocketWatch', () => {
  it('announces a socket that appears, is replaced, changes mode and goes; not the state it started from', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-sockwatch-'));
    dirs.push(dir);
    const path = join(dir, 'docker.sock');
    const other = join(dir, 'other.sock');
    const seen: string[] = [];
    const watch = new SocketWatch((p) => seen.push(p), 20);
    watches.push(watch);
    const otherServer = await listen(other);
    watch.set([path, other]);

    const server = await listen(path);
    await until('the new socket', () => seen.length === 1);
    expect(seen).toEqual([path]);

    chmodSync(path, 0o600);
    await until('the mode change', () => seen.length === 2);

    await new Promise((r) => server.close(r));
    await until('the socket gone', () => seen.length === 3);
    const again = await listen(path);
    await until('the socket replaced', () => seen.length === 4);
    expect(seen.every((p) => p === path)).toBe(true);

    // No longer watched: nothing more about it.
    watch.set([other]);
    await new Promise((r) => again.close(r));
    await new Promise((r) => setTimeout(r, 100));
    expect(seen).toHaveLength(4);
    await new Promise((r) => otherServer.close(r));
    await until('the other socket gone', () => seen.length === 5);
    expect(seen[4]).toBe(other);
  });

  it('takes a path whose directory does not exist yet', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-sockwatch-'));
    dirs.push(dir);
    const path = join(dir, 'later', 'd.sock');
    const seen: string[] = [];
    const watch = new SocketWatch((p) => seen.push(p), 20);
    watches.push(watch);
    watch.set([path]);
    await new Promise((r) => setTimeout(r, 60));
    expect(seen).toEqual([]);
    mkdirSync(join(dir, 'later'));
    const server = await listen(path);
    await until('the socket in the new directory', () => seen.length === 1);
    await new Promise((r) => server.close(r));
  });

  it('announces a daemon that died and left its socket file behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-sockwatch-'));
    dirs.push(dir);
    const path = join(dir, 'left.sock');
    const seen: string[] = [];
    const watch = new SocketWatch((p) => seen.push(p), 20);
    watches.push(watch);
    watch.set([path]);
    const daemon = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)})`]);
    try {
      await until('the daemon listening', () => seen.length === 1);
      daemon.kill('SIGKILL'); // no chance to unlink: the file stays, nothing listens on it
      await once(daemon, 'exit');
      await until('the socket no longer listened on', () => seen.length === 2);
      expect(statSync(path).isSocket()).toBe(true);
    } finally {
      daemon.kill('SIGKILL');
    }
  });

  // systemd's docker.socket binds /run/docker.sock; users and Docker's docs name /var/run/docker.sock, and
  // /proc/net/unix lists only the path the socket was bound as. A symlink may also name the socket file itself under
  // another name (a rootless daemon's socket linked as ~/.docker/run/docker.sock).
  it.each([
    {
      how: 'a symlinked directory (/var/run → /run)',
      link: (dir: string) => {
        symlinkSync('run', join(dir, 'varrun'));
        return join(dir, 'varrun', 'docker.sock');
      },
    },
    {
      how: 'a symlink to the socket file under another name',
      link: (dir: string) => {
        symlinkSync(join(dir, 'run', 'docker.sock'), join(dir, 'mine.sock'));
        return join(dir, 'mine.sock');
      },
    },
  ])('announces a daemon that stopped when the forward names its socket through $how', async ({ link }) => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-sockwatch-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'run'));
    const bound = join(dir, 'run', 'docker.sock');
    const named = link(dir);
    const seen: string[] = [];
    const watch = new SocketWatch((p) => seen.push(p), 20);
    watches.push(watch);
    watch.set([named]);
    const daemon = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(bound)})`]);
    try {
      await until('the daemon listening', () => seen.length === 1);
      daemon.kill('SIGKILL');
      await once(daemon, 'exit');
      await until('the socket no longer listened on', () => seen.length === 2);
      expect(seen.every((p) => p === named)).toBe(true);
    } finally {
      daemon.kill('SIGKILL');
    }
  });
});
