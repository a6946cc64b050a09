import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import type { MountView } from '../model.js';
import { batchFor, defaultMountSkipped, firstCause, mountSummary, mountsDegradedReason } from './mounts.js';

describe('batchFor', () => {
  const batch: FsEvents = { root: '/home/me', markerTouch: true, events: [{ path: 'a.txt', kind: 'change' }] };

  it('keeps the marker touch for a guest agent that applies it', () => {
    expect(batchFor(batch, ['ports', 'fs', CAP_MARKER_TOUCH])).toBe(batch);
  });

  it('leaves the field out for an older guest agent, whose strict schema would refuse the batch', () => {
    const plain = batchFor(batch, ['ports', 'udp', 'fs']);
    expect(plain).toEqual({ root: '/home/me', events: batch.events });
    expect('markerTouch' in plain).toBe(false);
  });
});

const view = (
  mountPoint: string,
  state: MountView['state'],
  error: string | null,
  cause: MountView['cause'] = null,
): MountView => ({
  location: mountPoint,
  mountPoint,
  guestPath: mountPoint,
  driver: 'builtin',
  writable: false,
  state,
  inotify: 'off',
  since: '2025-01-01T00:00:00.000Z',
  error,
  cause,
});

describe('mountSummary', () => {
  it('counts the mounted ones and names each failed mount with its reason, a shared reason once', () => {
    const sshfs = 'sshfs in the guest: sshfs is not installed in the guest';
    expect(
      mountSummary([
        view('/a', 'mounted', null),
        view('/b', 'error', sshfs),
        view('/c', 'error', 'host directory /x: mounts[2].location /x does not exist on the host'),
        view('/d', 'error', sshfs),
      ]),
    ).toBe(`1 of 4 mounted; /b, /d: ${sshfs}; /c: host directory /x: mounts[2].location /x does not exist on the host`);
    expect(mountSummary([view('/a', 'mounted', null)])).toBe('1 of 1 mounted');
  });
});

describe('mountsDegradedReason', () => {
  it('names the lost SSH connection, not a count taken while the mounts go one by one', () => {
    const lost = 'ssh connection lost: connection closed by the server';
    // The first mount's change arrives while the second still shows mounted.
    expect(mountsDegradedReason([view('/a', 'suspended', lost, 'ssh-down'), view('/b', 'mounted', null)])).toBe(lost);
    expect(mountsDegradedReason([view('/a', 'suspended', 'the guest is shutting down', 'guest-stopping')])).toBe(
      'the guest is shutting down',
    );
  });

  it('is the summary when the mounts themselves fail', () => {
    const views = [view('/a', 'mounted', null), view('/b', 'error', 'sshfs in the guest: missing', 'sshfs-missing')];
    expect(mountsDegradedReason(views)).toBe(mountSummary(views));
  });
});

describe('defaultMountSkipped', () => {
  const reason = 'the reason';

  it('says the default mount is tried again by itself while a fix in the guest can get it mounted', () => {
    const held = view('/home/me', 'error', 'sshfs in the guest: sshfs is not installed in the guest', 'sshfs-missing');
    expect(defaultMountSkipped(reason, [held])).toBe(
      'the default mount of ~ is not made: the reason; it is tried again by itself; to mount it elsewhere, put ' +
        '`mounts: [{location: "~", mountPoint: "~/host/home/me"}]` in tether.yaml (`mounts: []` for none)',
    );
  });

  it('leaves the retry out when its cause is one only tether.yaml changes, whatever the words', () => {
    const held = view('/root', 'error', 'mount point /root: in the way', 'mount-point-hides-home');
    expect(defaultMountSkipped(reason, [held])).toBe(
      'the default mount of ~ is not made: the reason; to mount it elsewhere, put ' +
        '`mounts: [{location: "~", mountPoint: "~/host/root"}]` in tether.yaml (`mounts: []` for none)',
    );
    // A guest directory of another user's (/root) stays theirs: no retry is promised, and the mountPoint fix the
    // reason names is spelled once, as the mounts: line the default mount needs.
    const taken = view(
      '/root',
      'error',
      "mount point /root: exists in the guest and is not the SSH user's",
      'mount-point-taken',
    );
    expect(defaultMountSkipped("/root is not the SSH user's; set the mount's mountPoint to ~/host/root", [taken])).toBe(
      "the default mount of ~ is not made: /root is not the SSH user's; set the mount's mountPoint to ~/host/root; " +
        'for the default mount, that is `mounts: [{location: "~", mountPoint: "~/host/root"}]` in tether.yaml (`mounts: []` for none)',
    );
    // The words alone decide nothing: without the cause it is tried again.
    const words = view('~', 'error', "mounting on /home/me would hide the SSH user's home /home/me in the guest");
    expect(defaultMountSkipped(reason, [words])).toContain('tried again by itself');
  });
});

describe('firstCause', () => {
  it("keeps a held mount's first cause, unless a later one only tether.yaml changes", () => {
    expect(firstCause('sshfs-missing', 'fuse-conf')).toBe('sshfs-missing');
    expect(firstCause('sshfs-missing', 'mount-point-hides-home')).toBe('mount-point-hides-home');
    expect(firstCause('mount-point-hides-home', 'guest-unchecked')).toBe('mount-point-hides-home');
    expect(firstCause(null, 'fuse-conf')).toBe(null);
  });
});
