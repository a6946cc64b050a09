import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { problemLine } from '../cli/render.js';
import { componentLogger } from '../log.js';
import { ProblemRing } from './problems.js';

/** A `forward` component logger whose warnings and errors `ring` records (the lines themselves go nowhere). */
function forwardLogger(ring: ProblemRing) {
  return componentLogger(
    ring.tap(pino({ level: 'info' }, new Writable({ write: (_c, _e, cb) => cb() })), 'agent'),
    'forward',
  );
}

describe('ProblemRing', () => {
  it('records the warnings and errors of a tapped logger and of the children modules make from it', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const ring = new ProblemRing(3);
    const root = ring.tap(pino({ level: 'info' }, sink), 'agent');
    const mount = componentLogger(root, 'mount', { mountPoint: '/home/me' });
    const sftp = mount.child({ component: 'sftp' });
    root.warn('agent warning');
    mount.info('not a problem');
    mount.error({ err: 'EACCES' }, 'mount failed');
    sftp.warn('bad packet');
    expect(ring.list().map((p) => `${p.component}: ${p.msg}`)).toEqual([
      'agent: agent warning',
      'mount: mount failed: EACCES',
      'sftp: bad packet',
    ]);
    root.error('fourth');
    expect(ring.list()).toHaveLength(3);
    expect(ring.list()[0].msg).toBe('mount failed: EACCES');
    // The log lines themselves are written as usual, with their bindings.
    expect(lines.some((l) => l.includes('"component":"sftp"') && l.includes('"mountPoint":"/home/me"'))).toBe(true);
  });

  it('keeps one entry, the latest, for a warning repeated with other numbers, so repeats do not crowd out the rest', () => {
    const ring = new ProblemRing(3);
    const root = ring.tap(pino({ level: 'info' }, new Writable({ write: (_c, _e, cb) => cb() })), 'agent');
    const mount = componentLogger(root, 'mount');
    root.error('the agent link is down');
    for (let i = 1; i <= 5; i++)
      mount.warn({ mountPoint: '/home/me', remounted: true }, `/home/me was mounted again (${i} reconnects)`);
    const udp = componentLogger(root, 'forward');
    udp.warn(`dropped: 1024 flows are open already`);
    udp.warn(`dropped: 1025 flows are open already`);
    expect(ring.list().map((p) => p.msg)).toEqual([
      'the agent link is down',
      '/home/me was mounted again (5 reconnects)',
      'dropped: 1025 flows are open already',
    ]);
  });

  it('keeps the reason a line carries in a field (error, err, reason) when its message does not say it', () => {
    const ring = new ProblemRing();
    const log = ring.tap(pino({ level: 'info' }, new Writable({ write: (_c, _e, cb) => cb() })), 'mount');
    log.error({ state: 'error', error: 'sshfs exited with status 1' }, 'mount error');
    log.warn({ err: new Error('EPIPE') }, 'sshfs channel error');
    log.warn({ reason: 'bad length' }, 'closing session');
    log.warn({ error: 'EADDRINUSE' }, 'forward error (EADDRINUSE)'); // said already: not twice
    expect(ring.list().map((p) => p.msg)).toEqual([
      'mount error: sshfs exited with status 1',
      'sshfs channel error: EPIPE',
      'closing session: bad length',
      'forward error (EADDRINUSE)',
    ]);
  });

  it('forgets problems that are over before one that still holds', () => {
    const ring = new ProblemRing(3);
    const forward = forwardLogger(ring);
    forward.error({ forward: 'unix//run/x.sock', state: 'error' }, 'guest socket /run/x.sock does not exist');
    // Trouble that passes, ten kinds of it: each is over at once.
    const kinds = 'abcdefghij';
    for (const kind of kinds) {
      forward.warn({ forward: 'tcp:8080', state: 'error' }, `connection reset (${kind})`);
      forward.info({ forward: 'tcp:8080', state: 'forwarding' }, 'forwarding');
    }
    expect(ring.list().map((p) => [p.msg, p.resolvedAt === null])).toEqual([
      ['guest socket /run/x.sock does not exist', true],
      ['connection reset (i)', false],
      ['connection reset (j)', false],
    ]);
  });

  it('keeps one entry for the same passing trouble repeated (a dev server restarting every second), open while it holds', () => {
    const ring = new ProblemRing(5);
    const forward = forwardLogger(ring);
    forward.warn({ forward: 'tcp/0.0.0.0:5173', state: 'conflict' }, 'host 127.0.0.1:5173 is busy');
    for (let i = 1; i <= 10; i++) {
      forward.warn({ forward: 'tcp/[::]:3000' }, `cannot forward a connection to guest [::]:3000: refused (${i} more)`);
      forward.info({ forward: 'tcp/[::]:3000', state: 'removed' }, 'forward tcp/[::]:3000 removed');
    }
    forward.warn({ forward: 'tcp/[::]:3000' }, 'cannot forward a connection to guest [::]:3000: refused (11 more)');
    expect(ring.list().map((p) => [p.msg, p.resolvedAt === null])).toEqual([
      ['host 127.0.0.1:5173 is busy', true],
      ['cannot forward a connection to guest [::]:3000: refused (11 more)', true],
    ]);
  });

  it('tells a problem whose forward was removed from one that recovered', () => {
    const ring = new ProblemRing();
    const forward = forwardLogger(ring);
    forward.warn({ forward: 'tcp/127.0.0.1:80->80', state: 'conflict' }, 'host 127.0.0.1:80 is busy');
    forward.warn({ forward: 'tcp/127.0.0.1:81->81', state: 'conflict' }, 'host 127.0.0.1:81 is busy');
    forward.info({ forward: 'tcp/127.0.0.1:80->80', state: 'removed' }, 'forward tcp/127.0.0.1:80->80 removed');
    forward.info({ forward: 'tcp/127.0.0.1:81->81', state: 'forwarding' }, 'forwarding');
    const [removed, recovered] = ring.list();
    expect(removed).toMatchObject({ msg: 'host 127.0.0.1:80 is busy', resolution: 'removed' });
    expect(removed.resolvedAt).not.toBeNull();
    expect(recovered.resolution).toBeUndefined();
    expect(recovered.resolvedAt).not.toBeNull();
    expect(problemLine(removed)).toMatch(/is busy \(removed \S+\)$/);
    expect(problemLine(recovered)).toMatch(/is busy \(resolved \S+\)$/);
  });

  it('marks a problem resolved when a later line shows its subject healthy again', () => {
    const ring = new ProblemRing();
    const root = ring.tap(pino({ level: 'info' }, new Writable({ write: (_c, _e, cb) => cb() })), 'agent');
    const mountA = componentLogger(root, 'mount', { mountPoint: '/a' });
    const mountB = componentLogger(root, 'mount', { mountPoint: '/b' });
    const forward = componentLogger(root, 'forward');
    const ssh = componentLogger(root, 'ssh');
    mountA.error({ state: 'error', error: 'EIO' }, 'mount /a error');
    mountB.error({ state: 'error', error: 'EIO' }, 'mount /b error');
    forward.warn({ forward: 'tcp:1', state: 'conflict' }, 'forward tcp:1 conflict');
    forward.warn({ forward: 'tcp:2', state: 'conflict' }, 'forward tcp:2 conflict');
    ssh.warn({ state: 'reconnecting' }, 'ssh reconnecting');
    mountA.info({ state: 'mounted' }, 'mount /a mounted');
    forward.info({ forward: 'tcp:1', state: 'removed' }, 'forward tcp:1 removed');
    forward.warn(
      { forward: 'tcp:2', state: 'forwarding', error: '::1 busy' },
      'forward tcp:2 forwarding on one family',
    );
    ssh.info({ state: 'connected' }, 'ssh connected');
    const open = () =>
      ring
        .list()
        .filter((p) => p.resolvedAt === null)
        .map((p) => p.msg);
    expect(open()).toEqual([
      'mount /b error: EIO',
      'forward tcp:2 conflict',
      'forward tcp:2 forwarding on one family: ::1 busy',
    ]);
    // The instance ready again settles what ready needs (here: nothing left), not a mount, which only mounting
    // settles (an instance with only the default mount is ready without it), nor a forward.
    ssh.warn({ state: 'reconnecting' }, 'ssh reconnecting again');
    root.info({ state: 'ready', from: 'degraded' }, 'host agent ready');
    expect(open()).toEqual([
      'mount /b error: EIO',
      'forward tcp:2 conflict',
      'forward tcp:2 forwarding on one family: ::1 busy',
    ]);
    // A mount's host watch that degraded (its directory removed) is settled by watching again, not by the mount.
    const watchA = componentLogger(root, 'watch', { mountPoint: '/a' });
    watchA.warn({ state: 'degraded', path: '/host/a' }, 'inotify degraded: host directory /host/a is gone');
    mountA.info({ state: 'mounted' }, 'mount /a mounted');
    expect(open()).toContain('inotify degraded: host directory /host/a is gone');
    watchA.info({ state: 'watching', path: '/host/a' }, 'host directory back: watching it again');
    expect(open()).not.toContain('inotify degraded: host directory /host/a is gone');
    // A guest agent of another build stays a problem while the link is up.
    const link = componentLogger(root, 'link');
    link.warn({ outdated: true }, 'the guest agent is not this build');
    link.info({ state: 'up' }, 'agent link up');
    expect(open()).toContain('the guest agent is not this build');
    // A low limit on open files holds for the whole run: the instance ready does not settle it.
    root.warn({ openFiles: 256 }, 'open files are limited to 256');
    root.info({ state: 'ready', from: 'degraded' }, 'host agent ready');
    expect(open()).toContain('open files are limited to 256');
    // Entries left hidden under a mount point stay so when it is mounted again.
    mountA.warn({ guestPath: '/a', hiddenEntries: 2 }, '2 entries were written to /a while it was not mounted');
    mountA.info({ state: 'mounted' }, 'mount /a mounted');
    expect(open()).toContain('2 entries were written to /a while it was not mounted');
    // A skipped requirement (the default mount of ~) stays open when the instance is ready without it; its own ok
    // line settles it.
    root.warn({ requirement: 5, state: 'skipped' }, 'requirement 5 of 5 skipped: mounts ready');
    root.info({ state: 'ready', from: 'starting' }, 'host agent ready');
    expect(open()).toContain('requirement 5 of 5 skipped: mounts ready');
    root.info({ requirement: 4, state: 'ok' }, 'requirement 4 of 5 ok: guest agent running');
    expect(open()).toContain('requirement 5 of 5 skipped: mounts ready');
    root.info({ requirement: 5, state: 'ok' }, 'requirement 5 of 5 ok: mounts ready');
    expect(open()).not.toContain('requirement 5 of 5 skipped: mounts ready');
  });
});
