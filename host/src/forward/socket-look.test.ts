// SocketLook against a fake guest: the probe at setup, the diagnosis after failed opens (one at a time, then rate
// limited), a channel that opens during a diagnosis outweighing it, and looks on a timer only while the guest agent
// does not watch the path.
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChannelOpenError, type SocketShell } from '../ssh/index.js';
import type { Forward } from './forward.js';
import { SocketLook } from './socket-look.js';

const GUEST_SOCKET = '/run/a.sock';

function openFailed(): ChannelOpenError {
  const cause = Object.assign(new Error('(SSH) Channel open failure: open failed'), { reason: 2 });
  return new ChannelOpenError(`cannot open guest socket: ${cause.message}`, cause);
}

/** Holds the guest's looks until the returned function is called. */
function holdLooks(guest: { hold: Promise<void> | null }): () => void {
  let release = () => {};
  guest.hold = new Promise((r) => {
    release = r;
  });
  return release;
}

/** Lets the looks that can end, end. */
const settled = () => new Promise((r) => setTimeout(r, 10));

/** A guest socket in `state`, its forward, and the look at it; `looks` counts the exec channels that examined it. */
function setup(state: string, watch = { on: false }) {
  const guest = { state, looks: 0, closed: 0, hold: null as Promise<void> | null, noSession: false };
  const ssh = {
    openStreamLocal: async () => {
      if (guest.state !== 'listening') throw openFailed();
      return { destroy: () => guest.closed++ };
    },
    execText: async () => {
      guest.looks++;
      await guest.hold;
      if (guest.noSession) throw new Error('no SSH session is free in the guest (sshd MaxSessions)');
      return { code: 0, stdout: `user=tb\nstate=${guest.state}\n`, stderr: '' };
    },
  } as unknown as SocketShell;
  const opened: (Error | null)[] = [];
  const forward = {
    id: `unix/${GUEST_SOCKET}`,
    guestAddr: GUEST_SOCKET,
    refused: null as Forward['refused'],
    suspended: null,
    opened: (err: Error | null) => void opened.push(err),
  };
  const look = new SocketLook(forward, {
    ssh,
    log: pino({ level: 'silent' }),
    show: (reason) => {
      forward.refused = reason;
    },
    watched: () => watch.on,
  });
  return { guest, forward, look, opened };
}

describe('SocketLook', () => {
  it('probes a listening socket at setup as a client would: one channel, closed at once', async () => {
    const { guest, forward, look, opened } = setup('listening');
    expect(look.looked).toBe(false);
    await look.settle();
    expect(look.looked).toBe(true);
    expect(guest.closed).toBe(1);
    expect(opened).toEqual([null]);
    expect(forward.refused).toBeNull();
    look.stop();
  });

  it('says why a socket that does not answer the probe fails', async () => {
    const { guest, forward, look } = setup('absent');
    await look.settle();
    expect(look.looked).toBe(true);
    expect(guest.looks).toBe(1);
    expect(forward.refused?.text).toContain(`guest socket ${GUEST_SOCKET} does not exist`);
    expect(forward.refused?.cause).toBe('service-down');
    look.stop();
  });

  it('diagnoses failed opens one at a time, and not again soon after one showed a cause', async () => {
    const { guest, forward, look } = setup('not listening');
    const release = holdLooks(guest);
    look.failed(new Error('not connected')); // not a refused channel: nothing to look at
    expect(guest.looks).toBe(0);
    look.failed(openFailed());
    look.failed(openFailed());
    release();
    await settled();
    expect(guest.looks).toBe(1);
    expect(forward.refused?.text).toContain(`nothing listens on guest socket ${GUEST_SOCKET}`);
    look.failed(openFailed());
    await settled();
    expect(guest.looks).toBe(1);
    look.stop();
  });

  it('keeps what a channel that opened during the diagnosis says', async () => {
    const { guest, forward, look } = setup('absent');
    const release = holdLooks(guest);
    look.failed(openFailed());
    look.opened();
    release();
    await settled();
    expect(guest.looks).toBe(1);
    expect(forward.refused).toBeNull();
    look.stop();
  });
});

describe('SocketLook while the guest agent watches the path', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("looks on the guest agent's word rather than a timer, and on its timer again once the word stops", async () => {
    vi.useFakeTimers();
    const watch = { on: true };
    const { guest, forward, look, opened } = setup('absent', watch);
    await look.settle();
    expect(guest.looks).toBe(1);
    expect(forward.refused?.text).toContain('does not exist');
    // Watched: minutes pass without a look (each would be an SSH session in the guest).
    await vi.advanceTimersByTimeAsync(180_000);
    expect(guest.looks).toBe(1);
    // The daemon starts: the guest agent's word has the forward look at once.
    guest.state = 'listening';
    look.changed();
    await vi.advanceTimersByTimeAsync(0);
    expect(opened).toEqual([null]);

    // It stops again while the guest agent's link is down: the forward looks on its own timer.
    guest.state = 'absent';
    look.failed(openFailed());
    await vi.advanceTimersByTimeAsync(0);
    expect(guest.looks).toBe(2);
    watch.on = false;
    look.unwatched();
    await vi.advanceTimersByTimeAsync(5_500);
    expect(guest.looks).toBe(3);
    look.stop();
  });

  it('shows the failed open, not forwarding, when the look cannot run, and looks again until it can', async () => {
    vi.useFakeTimers();
    // Watched or not: a look that found no session left is not something the guest agent will report a change of.
    const { guest, forward, look } = setup('absent', { on: true });
    guest.noSession = true;
    await look.settle();
    expect(forward.refused?.text).toMatch(
      /^cannot open guest socket.*open failed \(looking at why failed: .*MaxSessions/,
    );
    guest.noSession = false;
    await vi.advanceTimersByTimeAsync(5_500);
    expect(forward.refused?.text).toContain(`guest socket ${GUEST_SOCKET} does not exist`);
    look.stop();
  });
});
