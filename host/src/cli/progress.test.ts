import { describe, expect, it } from 'vitest';
import type { RequirementView, StatusView } from '../model.js';
import { BootProgress, bootOutcome, linkDownReason, linkNoteVerb } from './progress.js';

const req = (
  index: number,
  state: RequirementView['state'],
  extra: Partial<RequirementView> = {},
): RequirementView => ({
  index,
  total: 3,
  name: ['ssh reachable', 'host key', 'guest agent running'][index - 1],
  state,
  detail: null,
  elapsedMs: 300,
  ...extra,
});

describe('BootProgress', () => {
  it('prints one line per change, like limactl start', () => {
    const p = new BootProgress(0);
    expect(p.update([req(1, 'waiting'), req(2, 'pending'), req(3, 'pending')], 100)).toEqual([
      '[  0.1s] waiting for requirement 1 of 3: ssh reachable',
    ]);
    expect(p.update([req(1, 'waiting')], 500)).toEqual([]);
    expect(p.update([req(1, 'ok'), req(2, 'waiting')], 1200)).toEqual([
      '✓ requirement 1 of 3: ssh reachable (0.3s)',
      '[  1.2s] waiting for requirement 2 of 3: host key',
    ]);
    expect(p.update([req(2, 'ok'), req(3, 'failed', { detail: 'no answer on /run/tether/agent.sock' })], 2000)).toEqual(
      [
        '✓ requirement 2 of 3: host key (0.3s)',
        '[  1.7s] waiting for requirement 3 of 3: guest agent running',
        '✗ requirement 3 of 3: guest agent running: no answer on /run/tether/agent.sock',
      ],
    );
  });

  it('reports a changed detail while waiting and skipped requirements', () => {
    const p = new BootProgress(0);
    p.update([req(1, 'waiting'), req(2, 'pending'), req(3, 'pending')], 0);
    expect(p.update([req(1, 'waiting', { detail: 'connection refused, retrying' })], 3000)).toEqual([
      '[  3.0s] waiting for requirement 1 of 3: ssh reachable (connection refused, retrying)',
    ]);
    expect(p.update([req(1, 'ok'), req(2, 'ok'), req(3, 'skipped', { detail: 'no mounts configured' })], 4000)).toEqual(
      [
        '✓ requirement 1 of 3: ssh reachable (0.3s)',
        '[  3.7s] waiting for requirement 2 of 3: host key',
        '✓ requirement 2 of 3: host key (0.3s)',
        '- requirement 3 of 3: guest agent running (skipped: no mounts configured)',
      ],
    );
  });

  it('keeps requirement order when updates arrive out of order', () => {
    const p = new BootProgress(0);
    expect(p.update([req(2, 'ok')], 1000)).toEqual([]);
    expect(p.update([req(1, 'ok'), req(2, 'ok'), req(3, 'waiting')], 1000)).toEqual([
      '[  0.7s] waiting for requirement 1 of 3: ssh reachable',
      '✓ requirement 1 of 3: ssh reachable (0.3s)',
      '[  0.7s] waiting for requirement 2 of 3: host key',
      '✓ requirement 2 of 3: host key (0.3s)',
      '[  1.0s] waiting for requirement 3 of 3: guest agent running',
    ]);
  });
});

describe('bootOutcome', () => {
  const status = (state: StatusView['state'], requirements: RequirementView[]) =>
    ({ state, requirements }) as unknown as StatusView;
  const mountsFailed = [req(1, 'ok'), req(2, 'ok'), req(3, 'ok'), req(3, 'failed', { index: 5, name: 'mounts ready' })];

  it('waits while the agent has not said whether it goes on without a failed requirement', () => {
    expect(bootOutcome(status('starting', mountsFailed))).toBeNull();
    expect(bootOutcome(status('starting', [req(1, 'ok'), req(2, 'waiting')]))).toBeNull();
  });

  it('is degraded when the agent runs on without the failed requirement, failed when it gave up', () => {
    expect(bootOutcome(status('degraded', mountsFailed))).toMatchObject({
      outcome: 'degraded',
      requirement: { index: 5, name: 'mounts ready' },
    });
    expect(bootOutcome(status('failed', [req(1, 'ok'), req(2, 'failed')]))).toMatchObject({
      outcome: 'failed',
      requirement: { index: 2 },
    });
    expect(bootOutcome(status('stopping', mountsFailed))).toMatchObject({ outcome: 'failed' });
  });

  it('is ready once every requirement is met and the agent says ready', () => {
    expect(bootOutcome(status('ready', [req(1, 'ok'), req(2, 'ok'), req(3, 'skipped')]))).toMatchObject({
      outcome: 'ready',
    });
  });

  it('waits while every requirement is met but the link to the guest is down', () => {
    expect(bootOutcome(status('degraded', [req(1, 'ok'), req(2, 'ok'), req(3, 'ok')]))).toBeNull();
  });
});

describe('linkDownReason', () => {
  const status = (sshState: string, linkError: string | null) =>
    ({
      ssh: { state: sshState, lastError: 'connect ECONNREFUSED' },
      link: { up: false, lastError: linkError },
    }) as unknown as StatusView;

  it('says why SSH is down, or why the guest agent does not answer over it', () => {
    expect(linkDownReason(status('reconnecting', null))).toBe('SSH is reconnecting (connect ECONNREFUSED)');
    expect(linkDownReason(status('connected', 'connect ENOENT /run/tether/agent.sock'))).toBe(
      'SSH is connected but the guest agent does not answer (connect ENOENT /run/tether/agent.sock)',
    );
  });

  it('does not give the SSH drop that is over as the reason', () => {
    expect(linkDownReason(status('connected', 'ssh connection lost: connection closed by the server'))).toBe(
      'SSH is connected again; the link to the guest agent is reopening',
    );
  });
});

describe('linkNoteVerb', () => {
  it('says a link that stays down again every 30 s, and a new reason at most every 5 s', () => {
    const prev = { reason: 'SSH is reconnecting (a)', at: 1_000 };
    expect(linkNoteVerb(null, 'SSH is reconnecting (a)', 0)).toBe('waiting');
    expect(linkNoteVerb(prev, 'SSH is reconnecting (a)', 30_000)).toBeNull();
    expect(linkNoteVerb(prev, 'SSH is reconnecting (a)', 31_000)).toBe('still waiting');
    expect(linkNoteVerb(prev, 'SSH is reconnecting (b)', 5_999)).toBeNull();
    expect(linkNoteVerb(prev, 'SSH is reconnecting (b)', 6_000)).toBe('waiting');
  });
});
