// How a guest socket the SSH user may not connect to is explained: the fix named depends on who may.
import { describe, expect, it } from 'vitest';
import { socketOpenFailure } from './guest-socket.js';

/** A guest shell whose state script answers as if `socket` were owner:group with `mode`, for user `me`. */
function shellFor(stat: string) {
  return {
    execText: async () => ({
      code: 0,
      signal: null,
      stdout: `user=me\nstate=no access\ndenied=${stat}:/run/x.sock\n`,
      stderr: '',
    }),
    openStreamLocal: async () => {
      throw new Error('not used');
    },
  };
}

describe('socketOpenFailure for a socket the user may not connect to', () => {
  const open = new Error('(SSH) Channel open failure: open failed');

  it('names the group to join when group membership would give access', async () => {
    const failure = await socketOpenFailure(shellFor('root:docker:660'), '/run/x.sock', open);
    expect(failure?.serviceDown).toBe(false); // the service runs: the user may not reach it
    const why = failure?.message;
    expect(why).toContain('add me to group docker in the guest (sudo usermod -aG docker me)');
  });

  it("never suggests joining root's group", async () => {
    const why = (await socketOpenFailure(shellFor('root:root:660'), '/run/x.sock', open))?.message;
    expect(why).not.toContain('usermod');
    expect(why).toContain('only root may connect: log in as root (ssh.user) or have the service open it to a group');
  });
});

describe('socketOpenFailure for a socket nothing serves', () => {
  const open = new Error('(SSH) Channel open failure: open failed');
  const shellIn = (state: string) => ({
    execText: async () => ({ code: 0, signal: null, stdout: `user=me\nstate=${state}\n`, stderr: '' }),
    openStreamLocal: async () => {
      throw new Error('not used');
    },
  });

  it("names docker's start command for a stopped dockerd's socket, left behind or removed", async () => {
    for (const state of ['not listening', 'absent']) {
      const why = await socketOpenFailure(shellIn(state), '/var/run/docker.sock', open);
      expect(why?.message).toContain('start it in the guest: sudo systemctl start docker');
      expect(why?.serviceDown).toBe(true);
    }
    expect((await socketOpenFailure(shellIn('not listening'), '/run/other.sock', open))?.message).not.toContain(
      'systemctl',
    );
  });
});
