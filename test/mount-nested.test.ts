// A mount inside another (a read-only home and a writable project in it, at the same paths) is mounted after the
// one it lies in, whatever their order in the config, at the first mount and again after an SSH outage: mounted
// first, it would be hidden under the outer mount while still showing `mounted`.
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import type { Client } from 'ssh2';
import { afterAll, describe, expect, it } from 'vitest';
import { MountConfig } from '../host/src/config/schema.js';
import { silentLogger } from '../host/src/log.js';
import { MountManager } from '../host/src/mount/index.js';
import { connect, guest, guestTry, loginIds, recordingLogger, waitFor } from './helpers/mount-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';

/** The sshfs mounts under `prefix` in this namespace's mount table, in mount order. */
function sshfsMountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' - ')[1]?.startsWith('fuse.sshfs'))
    .map((l) => l.split(' ')[4])
    .filter((p) => p.startsWith(prefix));
}

describe.skipIf(!canRunTestbed())('nested mounts', () => {
  const tb = useTestbed();
  let manager: MountManager | undefined;
  let client: Client | undefined;
  const home = mkdtempSync(join(tmpdir(), 'tether-export-nested-'));
  afterAll(async () => {
    await manager?.stop();
    client?.end();
    rmSync(home, { recursive: true, force: true });
  });

  it('mounts the outer mount first, at the start and after a reconnect, so the inner one stays writable', async () => {
    mkdirSync(join(home, 'proj'));
    const outerPoint = join(tb().stateDir, 'nested');
    const innerPoint = join(outerPoint, 'proj');
    mkdirSync(innerPoint, { recursive: true });
    const { uid, gid } = loginIds(tb().user);
    for (const p of [outerPoint, innerPoint]) chownSync(p, uid, gid);
    // The inner mount first in the config, as a user adding a project to a home mount may write it.
    const configs = [
      { location: join(home, 'proj'), mountPoint: innerPoint, writable: true },
      { location: home, mountPoint: outerPoint, writable: false },
    ].map((m) => MountConfig.parse({ driver: 'builtin', inotify: false, ...m }));
    const { logger, lines } = recordingLogger();
    manager = new MountManager(configs, { logger });
    client = await connect(tb());
    await manager.start(client, () => true);
    expect(manager.views().map((v) => v.state)).toEqual(['mounted', 'mounted']);
    expect(sshfsMountsUnder(outerPoint)).toEqual([outerPoint, innerPoint]);
    await guest(tb(), `echo one > ${innerPoint}/w.txt`);
    expect(readFileSync(join(home, 'proj', 'w.txt'), 'utf8')).toBe('one\n');
    expect((await guestTry(tb(), `echo no > ${outerPoint}/r.txt`)).code).not.toBe(0);

    const m = manager;
    client.once('close', () => m.suspend('ssh connection closed'));
    await tb().stopSshd();
    await waitFor(() => m.views().every((v) => v.state === 'suspended'), { what: 'suspended', timeoutMs: 20_000 });
    await waitFor(() => sshfsMountsUnder(outerPoint).length === 0, { what: 'the guest mounts to go' });
    await tb().startSshd();
    client = await connect(tb());
    await m.resume(client);
    expect(m.views().map((v) => v.state)).toEqual(['mounted', 'mounted']);
    expect(sshfsMountsUnder(outerPoint)).toEqual([outerPoint, innerPoint]);
    await guest(tb(), `echo two >> ${innerPoint}/w.txt`);
    expect(readFileSync(join(home, 'proj', 'w.txt'), 'utf8')).toBe('one\ntwo\n');
    // Under the inner mount point lies the outer mount's view of the host files (w.txt is one since the first mount):
    // nothing the guest wrote while SSH was down.
    expect(lines.filter((l) => / (entry was|entries were) written to /.test(l.msg))).toEqual([]);
    await m.stop();
  });

  /** A read-only home at `<state>/name` and its writable proj at `<state>/name/proj`, outer one first. */
  function homeAndProject(name: string, inotify: boolean) {
    const outerPoint = join(tb().stateDir, name);
    const innerPoint = join(outerPoint, 'proj');
    mkdirSync(innerPoint, { recursive: true });
    const { uid, gid } = loginIds(tb().user);
    for (const p of [outerPoint, innerPoint]) chownSync(p, uid, gid);
    const configs = [
      { location: home, mountPoint: outerPoint, writable: false },
      { location: join(home, 'proj'), mountPoint: innerPoint, writable: true },
    ].map((m) => MountConfig.parse({ driver: 'builtin', inotify, ...m }));
    return { outerPoint, innerPoint, configs };
  }

  it('unmounts an inner mount made first (its outer one was held) and mounts it again inside the outer one', async () => {
    const { outerPoint, innerPoint, configs } = homeAndProject('nested2', false);
    manager = new MountManager(configs, { logger: silentLogger() });
    client ??= await connect(tb());
    // The outer mount's requirements are not met yet: the inner one is mounted alone, on the plain directory.
    await manager.start(client, () => true, { which: [1] });
    expect(sshfsMountsUnder(outerPoint)).toEqual([innerPoint]);
    await manager.start(client, () => true, { which: [0] });
    expect(manager.views().map((v) => v.state)).toEqual(['mounted', 'mounted']);
    expect(sshfsMountsUnder(outerPoint)).toEqual([outerPoint, innerPoint]);
    await guest(tb(), `echo three >> ${innerPoint}/w.txt`);
    expect(readFileSync(join(home, 'proj', 'w.txt'), 'utf8')).toBe('one\ntwo\nthree\n');
    await manager.stop();
  });

  it('sends a host edit inside the inner mount once, from the inner mount, and none of the guest changes there', async () => {
    const { outerPoint, innerPoint, configs } = homeAndProject('nested3', true);
    const batches: FsEvents[] = [];
    manager = new MountManager(configs, { logger: silentLogger() });
    client ??= await connect(tb());
    await manager.start(client, (b) => {
      batches.push(b);
      return true;
    });
    const sent = (root: string, path: string) =>
      batches.filter((b) => b.root === root).flatMap((b) => b.events.filter((e) => e.path === path));
    await guest(tb(), `echo guest > ${innerPoint}/guest.txt`);
    writeFileSync(join(home, 'proj', 'host.txt'), 'host');
    writeFileSync(join(home, 'fence.txt'), 'fence');
    await waitFor(() => sent(innerPoint, 'host.txt').length > 0 && sent(outerPoint, 'fence.txt').length > 0, {
      what: 'the host edits to be sent',
    });
    // The outer mount's view of proj is hidden under the inner mount: its watcher leaves proj to the inner one.
    expect(batches.filter((b) => b.root === outerPoint).flatMap((b) => b.events.map((e) => e.path))).toEqual([
      'fence.txt',
    ]);
    expect(sent(innerPoint, 'guest.txt')).toEqual([]);
  });
});
