import { CAP_MARKER_TOUCH, type FsEvents } from '@tether/protocol';
import { describe, expect, it } from 'vitest';
import { batchFor } from './mounts.js';

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
