// doctor's advice for a forward in conflict (another process, which lsof finds, or another of tether's own forwards,
// where lsof would only show tether: the fix is to remove one of them) and for a mount that is not mounted.
import { describe, expect, it } from 'vitest';
import type { ForwardView, MountView } from '../model.js';
import { forwardProblem, mountProblem, requirementFix } from './doctor.js';

const conflict = (error: string): ForwardView => ({
  id: 'tcp/127.0.0.1:8097',
  proto: 'tcp',
  guestAddr: '127.0.0.1:8097',
  hostAddrs: ['127.0.0.1:18150'],
  state: 'conflict',
  process: null,
  connections: 0,
  bytesIn: 0,
  bytesOut: 0,
  since: new Date(0).toISOString(),
  error,
  source: 'runtime',
});

describe('doctor on a forward in conflict', () => {
  it('points at lsof when another process holds the host port', () => {
    const r = forwardProblem('vm', conflict('host address 127.0.0.1:18150 is in use by another process; retrying'));
    expect(r.state).toBe('fail');
    expect(r.fix).toMatch(/free host port 18150 \(see `lsof -nP -i :18150`\)/);
  });

  it('says to wait, not to look for a listener, when a connection from the port holds it', () => {
    const r = forwardProblem(
      'vm',
      conflict(
        'host address 127.0.0.1:18150 is held by a connection from that port, not by a listener (an outgoing ' +
          'connection, or one closed less than a minute ago, in TIME-WAIT); retrying until it is free',
      ),
    );
    expect(r.fix).toMatch(/^wait: tether binds it once the connection is gone .*ss -tan sport = :18150/);
    expect(r.fix).not.toMatch(/lsof/);
  });

  it('names the forward to remove when one of tether’s own holds it', () => {
    const r = forwardProblem(
      'vm',
      conflict(
        "host address 127.0.0.1:18150 is in use by tether's forward tcp/127.0.0.1:8090->18150 (on 127.0.0.1:18150); retrying until it is free",
      ),
    );
    expect(r.fix).toMatch(/^remove one of the two: tether forward rm vm tcp\/127\.0\.0\.1:8090->18150,/);
    expect(r.fix).not.toMatch(/lsof/);
  });

  it('names the forward to remove when an added forward took the host address', () => {
    const r = forwardProblem(
      'vm',
      conflict('host 127.0.0.1:18150 is taken by forward tcp/127.0.0.1:8090->18150 (guest 127.0.0.1:8090)'),
    );
    expect(r.fix).toMatch(/^remove one of the two: tether forward rm vm tcp\/127\.0\.0\.1:8090->18150,/);
  });
});

describe('doctor on a mount the agent has not mounted', () => {
  const view = (state: MountView['state'], error: string | null): MountView => ({
    location: '/srv/code',
    mountPoint: '~/code',
    guestPath: '/home/me/code',
    driver: 'openssh',
    writable: true,
    state,
    inotify: 'off',
    since: new Date(0).toISOString(),
    error,
  });

  it('names the mount, its state and why, and where to look', () => {
    const r = mountProblem('vm', view('error', 'driver openssh for /srv/code: no sftp-server found'));
    expect(r).toMatchObject({
      name: 'mount ~/code',
      state: 'fail',
      detail: '/srv/code → /home/me/code is error: driver openssh for /srv/code: no sftp-server found',
    });
    expect(r.fix).toContain('tether logs vm --component mount');
  });

  it('says a suspended mount comes back with the SSH connection', () => {
    expect(mountProblem('vm', view('suspended', 'ssh connection lost')).fix).toMatch(/SSH connection is back/);
  });
});

describe('requirementFix', () => {
  it('takes the advice a requirement embeds, and says how to fix a missing host directory', () => {
    expect(requirementFix('sshfs is not installed in the guest; fix it in the guest: sudo apt install sshfs')).toBe(
      'sudo apt install sshfs',
    );
    expect(requirementFix('mounts[1].location /srv/missing does not exist on the host')).toBe(
      'create the directory /srv/missing on the host, or set mounts[1].location in tether.yaml to one that exists',
    );
    expect(
      requirementFix(
        "sshfs -o allow_other needs user_allow_other in the guest's /etc/fuse.conf (sudo -n or doas -n was not allowed: sudo: a password is required); fix it in the guest as root: echo user_allow_other >> /etc/fuse.conf",
      ),
    ).toBe('as root in the guest: echo user_allow_other >> /etc/fuse.conf');
    expect(
      requirementFix(
        "/root exists in the guest and is not the SSH user's to mount on; set the mount's mountPoint to a path the SSH user may create, e.g. /mnt/root",
      ),
    ).toBe("set the mount's mountPoint in tether.yaml (mounts:) to a path the SSH user may create, e.g. /mnt/root");
    expect(requirementFix('something else')).toBe('see the detail above');
  });
});
