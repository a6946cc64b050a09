// OpenSSH's MaxSessions: sshd refuses a session channel (exec, sftp) with "open failed" once the connection holds as
// many as it allows (10 by default), and also for a moment after one ended, until it has freed that session's slot;
// running guest commands back to back, or beside one another, meets both. A refused session is opened again after a
// short wait; a refusal that stays is named for what it is.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A refused session channel: OpenSSH answers SSH_OPEN_CONNECT_FAILED (RFC 4254 §5.1, its default reason, though a
 * session connects nothing) with "open failed"; ADMINISTRATIVELY_PROHIBITED is taken alike.
 */
const REFUSED = new Set([1, 2]);
/** Waits between the attempts: about 1.5 s in all, for sessions that end soon (a command, a probe). */
const RETRY_DELAYS_MS = [25, 50, 100, 200, 400, 800];

export const SESSION_LIMIT_HINT =
  "the guest's sshd allows no more sessions on this connection (MaxSessions in its sshd_config, 10 by default; " +
  'each mount holds one while it is mounted)';

/** Opens a session channel with `open`, trying again while sshd refuses it as over its session limit. */
export async function openSession<T>(open: () => Promise<T>, delays: readonly number[] = RETRY_DELAYS_MS): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await open();
    } catch (err) {
      if (!(err instanceof Error) || !REFUSED.has((err as { reason?: number }).reason ?? 0)) throw err;
      if (attempt >= delays.length) {
        err.message = `${err.message} (${SESSION_LIMIT_HINT})`;
        throw err;
      }
      await sleep(delays[attempt]);
    }
  }
}
