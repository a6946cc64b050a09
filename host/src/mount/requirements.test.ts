// Each unmet mount requirement carries its cause and fix as fields, set where the failure is found: doctor and the
// agent read those, never the words of the detail. The guest is a scripted stand-in for an SSH client that answers
// each check's command.
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'ssh2';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { MountConfig } from '../config/schema.js';
import { checkMountRequirements } from './requirements.js';

interface Answer {
  code: number;
  stdout?: string;
  stderr?: string;
}

/**
 * A client whose every exec runs `answer` on the script; a startup marker the script prints is echoed first. A null
 * answer is a command that never ends (a hung mount it touched).
 */
function scriptedGuest(answer: (script: string) => Answer | null): Client {
  const exec = (command: string, _opts: unknown, cb: (err: Error | undefined, ch: EventEmitter) => void) => {
    const channel = Object.assign(new EventEmitter(), { stderr: new EventEmitter(), close: () => undefined });
    cb(undefined, channel);
    const r = answer(command);
    if (r === null) return;
    const marker = /(tether-[a-z]+) ([0-9a-f]{24})/.exec(command);
    setImmediate(() => {
      channel.emit('data', Buffer.from(`${marker ? `${marker[1]}-${marker[2]}\n` : ''}${r.stdout ?? ''}`));
      if (r.stderr) channel.stderr.emit('data', Buffer.from(r.stderr));
      channel.emit('exit', r.code);
      channel.emit('close');
    });
  };
  return { exec } as unknown as Client;
}

/** A guest whose SSH user is `me` with home /home/me, where `answers` overrides the checks it names. */
function guest(answers: { sshfs?: Answer; fuse?: string; sudo?: Answer; mkdir?: Answer; exists?: Answer }) {
  return scriptedGuest((script) => {
    if (script.includes('pwd -P')) {
      const path = /P=(\S+);/.exec(script)?.[1] ?? '';
      return { code: 0, stdout: `/bin/bash\n${path.startsWith('"$HOME"') ? '/home/me' : path.replace(/'/g, '')}\n` };
    }
    if (script.includes('command -v sshfs')) return answers.sshfs ?? { code: 0, stdout: '/usr/bin/sshfs\n' };
    if (script.includes('fuse=root')) return { code: 0, stdout: `fuse=${answers.fuse ?? 'yes'}\n` };
    if (script.includes('as_root')) return answers.sudo ?? { code: 1, stderr: 'sudo: a password is required' };
    if (script.includes('/proc/self/mountinfo')) return { code: 0, stdout: '' };
    if (script.includes('mkdir -p')) return answers.mkdir ?? { code: 0 };
    if (script.includes('test -e')) return answers.exists ?? { code: 1 };
    return { code: 0 };
  });
}

const base = mkdtempSync(join(tmpdir(), 'tether-mount-req-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const mount = (location: string, mountPoint: string): MountConfig =>
  ({ location, mountPoint, writable: false, driver: 'builtin' }) as MountConfig;

describe('mount requirements', () => {
  it('give the cause and fix of each unmet one as fields', async () => {
    const missing = join(base, 'missing');
    const reqs = await checkMountRequirements(
      guest({ sshfs: { code: 3 }, fuse: 'no' }),
      [mount(missing, '/srv/missing'), mount(base, '~')],
      { fix: false },
    );
    const byName = Object.fromEntries(reqs.map((r) => [r.name, r]));
    expect(byName[`host directory ${missing}`]).toMatchObject({
      ok: false,
      cause: 'host-directory',
      fix: `create the directory ${missing} on the host, or set mounts[0].location in tether.yaml to one that exists`,
    });
    expect(byName['sshfs in the guest']).toMatchObject({
      ok: false,
      cause: 'sshfs-missing',
      fix: 'install sshfs in the guest, e.g. sudo apt-get install sshfs, or sudo dnf install fuse-sshfs',
    });
    // sudo -n is not allowed: the line is for root to add.
    expect(byName['user_allow_other in /etc/fuse.conf']).toMatchObject({
      ok: false,
      cause: 'fuse-conf',
      fix: 'as root in the guest: echo user_allow_other >> /etc/fuse.conf',
    });
    expect(byName['mount point ~']).toMatchObject({
      ok: false,
      cause: 'mount-point-hides-home',
      fix: "set the mount's mountPoint in tether.yaml (mounts:) to another path, e.g. ~/host/home/me",
    });
    expect(byName['mount point /srv/missing']).toMatchObject({ ok: true });
    expect(byName[`host directory ${base}`]).toEqual({
      name: `host directory ${base}`,
      ok: true,
      detail: null,
      mounts: [1],
    });
  });

  it('give the command that makes a mount point the SSH user cannot create, and the sudo fix of fuse.conf', async () => {
    const reqs = await checkMountRequirements(
      guest({ fuse: 'no', sudo: { code: 0 }, mkdir: { code: 1, stderr: 'Permission denied' } }),
      [mount(base, '/srv/data')],
      { fix: false },
    );
    const byName = Object.fromEntries(reqs.map((r) => [r.name, r]));
    expect(byName['user_allow_other in /etc/fuse.conf']).toMatchObject({
      cause: 'fuse-conf',
      fix: 'echo user_allow_other | sudo tee -a /etc/fuse.conf',
    });
    expect(byName['mount point /srv/data']).toMatchObject({
      cause: 'mount-point-not-creatable',
      fix: `sudo mkdir -p /srv/data && sudo chown "$(id -u):$(id -g)" /srv/data`,
    });
  });

  it('tell a mount point that is not the SSH user’s from one that cannot be created', async () => {
    const reqs = await checkMountRequirements(
      guest({ mkdir: { code: 1, stderr: 'Permission denied' }, exists: { code: 0 } }),
      [mount(base, '/root')],
      { fix: false },
    );
    expect(reqs.find((r) => r.name === 'mount point /root')).toMatchObject({
      cause: 'mount-point-taken',
      fix: "set the mount's mountPoint in tether.yaml (mounts:) to a path the SSH user may create, e.g. ~/host/root",
    });
  });

  it('say that a mount point whose look does not end is held by a hung mount, and how to free it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const client = scriptedGuest((script) =>
        script.includes('pwd -P') && script.includes('/srv/hung') ? null : { code: 0 },
      );
      const checking = checkMountRequirements(client, [mount(base, '/srv/hung')], { fix: false });
      let reqs: Awaited<typeof checking> | undefined;
      void checking.then((r) => {
        reqs = r;
      });
      // The scripted answers come on setImmediate, the exec timeout on a (fake) setTimeout.
      for (let i = 0; i < 40 && !reqs; i++) {
        await new Promise((resolve) => setImmediate(resolve));
        await vi.advanceTimersByTimeAsync(1_000);
      }
      expect(reqs?.find((r) => r.name === 'mount point /srv/hung')).toMatchObject({
        ok: false,
        cause: 'guest-unchecked',
        detail: expect.stringMatching(
          /^\/srv\/hung did not answer in the guest within \d+ s: a mount there whose sshfs process is stopped or hung/,
        ),
        fix: expect.stringContaining('end that sshfs process'),
      });
    } finally {
      vi.useRealTimers();
    }
  });

  it('say when the guest was changed with sudo to meet one', async () => {
    let added = false;
    const client = scriptedGuest((script) => {
      if (script.includes('echo user_allow_other >>')) {
        added = true;
        return { code: 0 };
      }
      if (script.includes('fuse=root')) return { code: 0, stdout: `fuse=${added ? 'yes' : 'no'}\n` };
      if (script.includes('pwd -P')) return { code: 0, stdout: '/bin/bash\n/srv/data\n' };
      return { code: 0 };
    });
    const reqs = await checkMountRequirements(client, [mount(base, '/srv/data')]);
    expect(reqs.find((r) => r.name === 'user_allow_other in /etc/fuse.conf')).toMatchObject({
      ok: true,
      changedGuest: true,
    });
    expect(reqs.find((r) => r.name === 'sshfs in the guest')?.changedGuest).toBeUndefined();
  });
});
