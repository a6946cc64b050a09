import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import type { MountView } from '../model.js';
import { batchFor, mountSummary } from './mounts.js';

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

describe('mountSummary', () => {
  const view = (mountPoint: string, state: MountView['state'], error: string | null): MountView => ({
    location: mountPoint,
    mountPoint,
    guestPath: mountPoint,
    driver: 'builtin',
    writable: false,
    state,
    inotify: 'off',
    since: '2025-01-01T00:00:00.000Z',
    error,
  });

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
