// What the probe says when the guest cannot run it: a csh-family login shell is named with the fix.
import { describe, expect, it } from 'vitest';
import type { GuestShell } from './ensure.js';
import { probe } from './probe.js';

/** A guest whose every command ends as `exit`, printing `stderr` (what tcsh prints for tether's multi-line scripts). */
function failingGuest(stderr: string, code = 1): GuestShell {
  return {
    execText: async () => ({ code, signal: null, stdout: '', stderr }),
    sftp: async () => Promise.reject(new Error('unused')),
    exec: async () => Promise.reject(new Error('unused')),
    openStreamLocal: async () => Promise.reject(new Error('unused')),
  };
}

const config = { guestAgent: { installDir: '.tether-guest', socket: '/run/tether/agent.sock', provision: 'auto' } };

describe('probe', () => {
  it('names a csh or tcsh login shell, which cannot carry multi-line commands, and the fix', async () => {
    // tcsh 6.24's own words for `exec /bin/sh -c '<a script of several lines>'`.
    await expect(probe(failingGuest("Unmatched '''.\nUnmatched '''.\n"), config as never)).rejects.toThrow(
      /login shell looks like csh or tcsh.*\(it says: Unmatched '''\.\); give the SSH user sh, bash, zsh or fish/,
    );
  });

  it('says how the probe ended otherwise', async () => {
    await expect(probe(failingGuest('sh: 1: mkdir: Permission denied\n', 2), config as never)).rejects.toThrow(
      'probing the guest failed (exit 2): sh: 1: mkdir: Permission denied',
    );
  });
});
