// A tether mount survives the loss of the SSH connection: with the guest's sshd stopped the mount is `suspended`;
// after sshd is back and the manager resumes on a new connection, a stale FUSE mount left in the guest is cleared
// lazily and the mount works again without manual action. Also: stop() unmounts cleanly.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, guest, type MountFixture, recordingLogger, startMount, waitFor } from './helpers/mount-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';

function guestMountType(mountPoint: string): string | null {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === mountPoint);
  return line ? (line.split(' - ')[1]?.split(' ')[0] ?? null) : null;
}

/** Whether process `pid` has its working directory at `dir` (false once it is gone). */
function cwdIs(pid: number | undefined, dir: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/cwd`) === dir;
  } catch {
    return false;
  }
}

/** The pid of the sshfs serving `mountPoint` (ours: its command line names our mount point). */
function sshfsPid(mountPoint: string): number {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv[0]?.endsWith('sshfs') && argv.includes(mountPoint)) return Number(pid);
  }
  throw new Error(`no sshfs process for ${mountPoint}`);
}

describe.skipIf(!canRunTestbed())('mount reconnect', () => {
  const tb = useTestbed();
  let m: MountFixture | undefined;
  afterAll(async () => m?.stop());

  it('is suspended while sshd is down and mounts again after a reconnect, naming what was written meanwhile', async () => {
    const { logger, lines } = recordingLogger();
    m = await startMount(tb(), { driver: 'builtin', writable: true }, { logger });
    const fixture = m;
    await guest(tb(), `echo before > ${fixture.mountPoint}/f`);
    fixture.client.once('close', () => fixture.manager.suspend('ssh connection closed'));
    await tb().stopSshd();
    await waitFor(() => fixture.manager.views()[0].state === 'suspended', { what: 'suspended', timeoutMs: 20_000 });
    expect(fixture.changes.some((v) => v.state === 'suspended')).toBe(true);
    // sshfs ended with its channel and unmounted: a guest program writes into the plain directory underneath.
    await waitFor(() => guestMountType(fixture.mountPoint) === null, { what: 'the guest mount to go' });
    await guest(tb(), `echo meanwhile > ${fixture.mountPoint}/during.txt`);

    await tb().startSshd();
    const client = await connect(tb());
    fixture.client = client;
    // While the guest is checked before the remount, the mount no longer names the outage that has passed.
    fixture.manager.remounting();
    expect(fixture.manager.views()[0]).toMatchObject({ state: 'suspended', cause: 'remounting' });
    await fixture.manager.resume(client);
    expect(fixture.manager.views()[0]).toMatchObject({ state: 'mounted', error: null, cause: null });
    const warned = lines.filter((l) => l.msg.includes(`1 entry was written to ${fixture.mountPoint}`));
    expect(warned).toHaveLength(1);
    expect(warned[0].msg).toContain('mount --bind');
    // ... and what was written meanwhile is put down to the outage, not to the remount.
    expect(warned[0].msg).toContain('while it was not mounted (suspended: ssh connection closed)');
    // Guest programs still on the old mount cannot tell: the log says they need a restart.
    expect(
      lines.filter((l) => l.msg.includes(`mount ${fixture.mountPoint} was mounted again: guest programs`)),
    ).toHaveLength(1);
    await guest(tb(), `echo after >> ${fixture.mountPoint}/f`);
    expect(readFileSync(join(fixture.location, 'f'), 'utf8')).toBe('before\nafter\n');

    // A second outage: its warning counts what it added, and the total hidden since the first mount beside it.
    fixture.client.once('close', () => fixture.manager.suspend('ssh connection closed again'));
    await tb().stopSshd();
    await waitFor(() => guestMountType(fixture.mountPoint) === null, { what: 'the guest mount to go again' });
    await guest(tb(), `echo meanwhile > ${fixture.mountPoint}/during2.txt`);
    await tb().startSshd();
    fixture.client = await connect(tb());
    await fixture.manager.resume(fixture.client);
    const again = lines.filter(
      (l) => / (entry was|entries were) written to /.test(l.msg) && l.msg.includes(fixture.mountPoint),
    );
    expect(again).toHaveLength(2);
    expect(again[1].msg).toMatch(
      /^1 entry was written .*\(suspended: ssh connection closed again\) \(2 in all since the first mount\);/,
    );
  });

  it('replaces a stale mount left behind by a killed sshfs', async () => {
    if (!m) throw new Error('previous test did not mount');
    const fixture = m;
    // Kill sshfs the hard way: the FUSE mount stays, dead ("transport endpoint is not connected").
    process.kill(sshfsPid(fixture.mountPoint), 'SIGKILL');
    await waitFor(() => fixture.manager.views()[0].state !== 'mounted', { what: 'mount lost' });
    await waitFor(() => fixture.manager.views()[0].state === 'mounted', { what: 'remounted', timeoutMs: 20_000 });
    expect(await guest(tb(), `cat ${fixture.mountPoint}/f`)).toBe('before\nafter\n');
  });

  it('mounts again, saying why, when the mount is unmounted in the guest', async () => {
    if (!m) throw new Error('previous test did not mount');
    const fixture = m;
    fixture.changes.length = 0;
    // sshfs ends with status 0 once its mount is gone (what `fusermount -u` or a guest shutdown does). Not
    // execFileSync: the unmount waits on sshfs, which waits on the SFTP server in this process.
    await promisify(execFile)('umount', [fixture.mountPoint]);
    await waitFor(() => fixture.manager.views()[0].state === 'mounted' && fixture.changes.length > 1, {
      what: 'remounted',
      timeoutMs: 20_000,
    });
    expect(fixture.changes.map((v) => v.error).filter(Boolean)[0]).toBe(
      'sshfs ended: unmounted in the guest (fusermount -u, or the guest shutting down)',
    );
    expect(await guest(tb(), `cat ${fixture.mountPoint}/f`)).toBe('before\nafter\n');
  });

  it('unmounts cleanly on stop', async () => {
    if (!m) throw new Error('previous test did not mount');
    const fixture = m;
    expect(guestMountType(fixture.mountPoint)).toBe('fuse.sshfs');
    await fixture.manager.stop();
    expect(fixture.manager.views()[0].state).toBe('unmounted');
    expect(guestMountType(fixture.mountPoint)).toBeNull();
  });

  it('stops without waiting on a guest process working in the mount: unmounts it lazily and says so', async () => {
    const { logger, lines } = recordingLogger();
    const fixture = await startMount(tb(), { driver: 'builtin' }, { logger });
    const worker = tb().spawn('sh', ['-c', `cd ${fixture.mountPoint} && exec sleep 120`], { user: tb().user });
    await waitFor(() => cwdIs(worker.pid, fixture.mountPoint), { what: 'a guest process working in the mount' });
    await fixture.manager.stop();
    expect(fixture.manager.views()[0].state).toBe('unmounted');
    expect(guestMountType(fixture.mountPoint)).toBeNull();
    expect(lines.some((l) => l.msg.includes(`unmount of ${fixture.mountPoint} failed (busy`))).toBe(true);
    worker.kill();
    await fixture.stop();
  });

  it('ends an sshfs that still serves a copy of the mount in another mount namespace (a container volume)', async () => {
    const { logger, lines } = recordingLogger();
    const fixture = await startMount(tb(), { driver: 'builtin' }, { logger });
    const sshfs = sshfsPid(fixture.mountPoint);
    // A private mount namespace keeps its own copy of the mount while this process sits in it.
    const holder = tb().spawn('unshare', [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      `cd ${fixture.mountPoint} && exec sleep 120`,
    ]);
    await waitFor(() => cwdIs(holder.pid, fixture.mountPoint), { what: 'a process in a copy of the mount' });
    await fixture.manager.stop();
    expect(guestMountType(fixture.mountPoint)).toBeNull();
    expect(lines.some((l) => l.msg.includes(`sshfs of ${fixture.mountPoint} still serves a copy of the mount`))).toBe(
      true,
    );
    await waitFor(() => !existsSync(`/proc/${sshfs}`) || readFileSync(`/proc/${sshfs}/stat`, 'utf8').includes(') Z '), {
      what: 'sshfs to end',
    });
    holder.kill();
    await fixture.stop();
  });

  it('leaves no dead mount behind when stopped while its sshfs is gone', async () => {
    const fixture = await startMount(tb(), { driver: 'builtin' });
    process.kill(sshfsPid(fixture.mountPoint), 'SIGKILL');
    // The manager retries about a second after the loss; nothing below awaits before stop() cancels that retry.
    await waitFor(() => fixture.manager.views()[0].state === 'error', { what: 'mount lost', intervalMs: 5 });
    expect(guestMountType(fixture.mountPoint)).toBe('fuse.sshfs'); // dead, until someone unmounts it
    await fixture.manager.stop();
    expect(guestMountType(fixture.mountPoint)).toBeNull();
    await fixture.stop();
  });
});
