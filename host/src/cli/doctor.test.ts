// doctor's advice for a forward in conflict (another process, which lsof finds, or another of tether's own forwards,
// where lsof would only show tether: the fix is to remove one of them; or another instance's) and for a mount that is not mounted, told by
// its cause.
import { describe, expect, it } from 'vitest';
import type { ForwardView, MountView } from '../model.js';
import { type CheckResult, forwardProblem, mountProblem, seenByAgent, servingChecks } from './doctor.js';

const conflict = (error: string, heldBy: ForwardView['heldBy']): ForwardView => ({
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
  heldBy,
  cause: null,
  source: 'runtime',
});

describe('doctor on a unix forward whose guest service is down', () => {
  it('warns with how to start it, as the forward serves by itself once the socket is there', () => {
    const f: ForwardView = {
      ...conflict(
        'guest socket /var/run/docker.sock does not exist: its service is not running in the guest (or removed it as it stopped); the host socket is closed until the service is back',
        null,
      ),
      id: 'unix//var/run/docker.sock',
      proto: 'unix',
      guestAddr: '/var/run/docker.sock',
      hostAddrs: ['/home/me/.tether/vm/docker.sock'],
      state: 'error',
      cause: 'service-down',
    };
    expect(forwardProblem('vm', f)).toMatchObject({
      state: 'warn',
      fix: expect.stringMatching(
        /^start the service in the guest that makes \/var\/run\/docker\.sock .*`tether forward rm vm \/home\/me\/\.tether\/vm\/docker\.sock`$/,
      ),
    });
  });
});

describe('doctor on a forward in conflict', () => {
  it('points at lsof when another process holds the host port', () => {
    const r = forwardProblem(
      'vm',
      conflict('host address 127.0.0.1:18150 is in use by another process; retrying', { kind: 'process' }),
    );
    expect(r.state).toBe('fail');
    expect(r.fix).toMatch(/free host port 18150 \(see `lsof -nP -i :18150`\)/);
  });

  it('does not put a forward in conflict on the host addresses that still forward', () => {
    const f = {
      ...conflict(
        'host address 127.0.0.1:9300 is in use by another process; retrying until it is free; [::1]:9300 forwarding meanwhile',
        { kind: 'process' },
      ),
      hostAddrs: ['127.0.0.1:9300', '[::1]:9300'],
    };
    expect(forwardProblem('vm', f).detail).toBe(`conflict: ${f.error}`);
    // An error that names no host address still says where.
    const g = { ...conflict('the port is busy', { kind: 'process' }), hostAddrs: ['127.0.0.1:9300'] };
    expect(forwardProblem('vm', g).detail).toBe('conflict on 127.0.0.1:9300: the port is busy');
  });

  it('says to wait, not to look for a listener, when a connection from the port holds it', () => {
    const r = forwardProblem(
      'vm',
      conflict(
        'host address 127.0.0.1:18150 is held by a connection from that port, not by a listener (an outgoing ' +
          'connection, or one closed less than a minute ago, in TIME-WAIT); retrying until it is free',
        { kind: 'connection' },
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
        { kind: 'forward', id: 'tcp/127.0.0.1:8090->18150', address: '127.0.0.1:18150' },
      ),
    );
    expect(r.fix).toMatch(/^remove one of the two: tether forward rm vm tcp\/127\.0\.0\.1:8090->18150,/);
    expect(r.fix).not.toMatch(/lsof/);
  });

  it('reads who holds the port from heldBy, not from the words of the error', () => {
    const held = (heldBy: ForwardView['heldBy']) => forwardProblem('vm', conflict('the port is busy', heldBy)).fix;
    expect(held({ kind: 'forward', id: 'tcp/127.0.0.1:8090', address: '0.0.0.0:18150' })).toMatch(
      /^remove one of the two: tether forward rm vm tcp\/127\.0\.0\.1:8090,/,
    );
    expect(held({ kind: 'connection' })).toMatch(/^wait: /);
    expect(held({ kind: 'process' })).toMatch(/^free host port 18150/);
  });

  it('names the other tether instance whose forward holds the port, and how this one gets it', () => {
    const heldBy = {
      kind: 'instance',
      instance: 'web',
      id: 'tcp/0.0.0.0:8097',
      address: '127.0.0.1:18150',
      state: 'forwarding',
    } as const;
    const r = forwardProblem('vm', conflict('the port is busy', heldBy));
    expect(r.fix).toBe(
      "instance web forwards its guest's tcp/0.0.0.0:8097 there, and this forward takes the port once that goes " +
        '(tether forward rm web tcp/0.0.0.0:8097, or tether down web); or map it elsewhere with a portForwards rule (hostPort)',
    );
    // An instance of the same VM holds every port this one would: it is the one to stop.
    const sibling = { name: 'web', pid: 42, target: 'me@127.0.0.1:2222' };
    expect(forwardProblem('vm', conflict('the port is busy', heldBy), [sibling]).fix).toBe(
      'instance web forwards the same VM and holds this port: tether down web',
    );
    // One whose guest is unreachable keeps the port (its forward suspended) until it is stopped.
    expect(forwardProblem('vm', conflict('the port is busy', { ...heldBy, state: 'suspended' })).fix).toMatch(
      /^instance web keeps the port for its guest's tcp\/0\.0\.0\.0:8097 while that guest is unreachable .*: tether down web frees it;/,
    );
  });
});

describe('doctor on a mount the agent has not mounted', () => {
  const view = (state: MountView['state'], error: string | null, cause: MountView['cause'] = null): MountView => ({
    location: '/srv/code',
    mountPoint: '~/code',
    guestPath: '/home/me/code',
    driver: 'openssh',
    writable: true,
    state,
    inotify: 'off',
    since: new Date(0).toISOString(),
    error,
    cause,
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

  it('does not offer a retry for a mount only tether.yaml can change', () => {
    const r = mountProblem(
      'vm',
      view('error', 'mount point /home/me: it would hide the SSH user’s home', 'mount-point-hides-home'),
    );
    expect(r.fix).toBe('set another mountPoint for it in tether.yaml (mounts:), then `tether down vm && tether up vm`');
  });

  it('says a suspended mount comes back with the SSH connection', () => {
    expect(mountProblem('vm', view('suspended', 'ssh connection lost', 'ssh-down')).fix).toMatch(
      /SSH connection is back/,
    );
  });

  it('says a mount suspended while its remount runs is being mounted again', () => {
    const m = view('suspended', 'the connection to the guest is back: remounting', 'remounting');
    expect(mountProblem('vm', m).fix).toBe(
      'being mounted again now; if it stays so, see `tether logs vm --component mount`',
    );
  });

  it('does not list again a mount that a failed mount requirement has explained, with its fix, above', () => {
    const taken = view('error', 'mount point /root: not the SSH user’s to mount on', 'mount-point-taken');
    const other = view('error', 'sshfs exited with status 1');
    const results: CheckResult[] = [];
    servingChecks(
      'vm',
      { forwards: null, mounts: [taken, other] },
      [],
      (r) => results.push(r),
      false,
      new Set(['mount-point-taken']),
    );
    expect(results.filter((r) => r.name.startsWith('mount '))).toEqual([
      expect.objectContaining({ name: 'mount ~/code', detail: expect.stringMatching(/sshfs exited/) }),
    ]);
  });

  it('tells a mount suspended for a guest shutdown by its cause, not by the words of its error', () => {
    const fix = (error: string) => mountProblem('vm', view('suspended', error, 'guest-stopping')).fix;
    expect(fix('the guest is shutting down')).toMatch(/once the guest is back from its shutdown/);
    expect(fix('the guest went down for a reboot')).toMatch(/once the guest is back from its shutdown/);
  });
});

describe('doctor on guest listeners over maxForwards', () => {
  it('warns that they are neither forwarded nor listed, and how to make room', () => {
    const results: CheckResult[] = [];
    const forwarding = { ...conflict('', null), state: 'forwarding' as const, error: null };
    servingChecks('dev', { forwards: [forwarding], capped: 3 }, [], (r) => results.push(r));
    expect(results.map((r) => [r.name, r.state])).toEqual([
      ['host ports', 'ok'],
      ['forward cap', 'warn'],
    ]);
    expect(results[1].detail).toBe('3 more guest listeners over maxForwards, not forwarded or listed');
    expect(results[1].fix).toMatch(/raise maxForwards in tether\.yaml/);
  });
});

describe('doctor on host ports', () => {
  it('counts the forwards that hold host ports, and the ignored ones apart', () => {
    const results: CheckResult[] = [];
    const forwarding = { ...conflict('', null), state: 'forwarding' as const, error: null };
    const ignored = { ...forwarding, state: 'ignored' as const, hostAddrs: [], error: 'guest sshd port 22' };
    servingChecks('dev', { forwards: [forwarding, ignored, ignored] }, [], (r) => results.push(r));
    expect(results).toEqual([{ name: 'host ports', state: 'ok', detail: '1 forward, none in conflict (2 ignored)' }]);
  });

  it('does not call the host ports of suspended forwards free of conflicts', () => {
    const results: CheckResult[] = [];
    const suspended = { ...conflict('', null), state: 'suspended' as const, error: null };
    servingChecks('dev', { forwards: [suspended, suspended] }, [], (r) => results.push(r));
    expect(results).toEqual([
      {
        name: 'host ports',
        state: 'skip',
        detail:
          '2 forwards, 2 of them suspended while the link to the guest is down; their host ports are tried again once it is back',
      },
    ]);
  });
});

describe('doctor when a new SSH login fails but the running agent is connected', () => {
  it("tells the guest agent and its scanner from the running agent's view", () => {
    const guest = {
      version: '0.1.0',
      build: null,
      hostname: 'vm',
      kernel: '6.1',
      arch: 'x64',
      scanIntervalMs: 100,
      listenEvents: { on: true, detail: 'tracefs' },
      agentPid: 42,
      agentStartedAt: new Date().toISOString(),
      listeners: 3,
    };
    const [agent, scanner] = seenByAgent(guest);
    expect(agent).toMatchObject({ name: 'guest agent', state: 'ok' });
    expect(agent.detail).toMatch(/^tether-guest 0\.1\.0 pid 42, as the running agent sees it over its SSH connection/);
    expect(scanner).toMatchObject({ name: 'port scanner', state: 'ok' });
    expect(scanner.detail).toMatch(/^scanning every 100 ms, 3 listeners; kernel listen events on \(tracefs\)/);
    expect(seenByAgent({ ...guest, scanIntervalMs: 0 })[1].state).toBe('fail');
  });
});

describe('doctor on a forward refused a host port below 1024 (a host user without privileges)', () => {
  const privileged = (proto: 'tcp' | 'udp', port: number, source: ForwardView['source']): ForwardView => ({
    ...conflict(
      `cannot listen on 127.0.0.1:${port}, [::1]:${port} (EACCES): ports below 1024 need privileges on this host`,
      null,
    ),
    id: `${proto}/127.0.0.1:${port}`,
    proto,
    guestAddr: `127.0.0.1:${port}`,
    hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    state: 'privileged',
    source,
  });
  const suggestedPorts = (fix: string | null | undefined) =>
    [...(fix ?? '').matchAll(/(\d+):\d+|hostPort: (\d+)/g)].map((m) => Number(m[1] ?? m[2]));

  it('suggests forward add from a host port the user may bind, for a guest service on port 80', () => {
    const r = forwardProblem('vm', privileged('tcp', 80, 'detected'));
    expect(r.state).toBe('warn');
    expect(r.fix).toContain('`tether forward add vm 10080:80`');
    expect(r.fix).toContain('a portForwards rule with guestPort: 80 and hostPort: 10080');
    // 80 once got hostPort 180, itself below 1024.
    expect(suggestedPorts(r.fix).length).toBeGreaterThan(0);
    for (const p of suggestedPorts(r.fix)) expect(p).toBeGreaterThanOrEqual(1024);
  });

  it('names the proto for a UDP service such as chronyd on 323', () => {
    const r = forwardProblem('vm', privileged('udp', 323, 'detected'));
    expect(r.fix).toContain('`tether forward add vm 10323:323/udp`');
    expect(r.fix).toContain('proto: udp');
  });

  it('fails a static rule that asks for a port below 1024, with a host port for it', () => {
    const r = forwardProblem('vm', privileged('tcp', 25, 'static'));
    expect(r.state).toBe('fail');
    expect(r.fix).toBe('give its portForwards rule a host port ≥ 1024, e.g. hostPort: 10025');
  });
});
