// Whether the guest as a whole is shutting down, as systemd tells it (`systemctl is-system-running` answers
// `stopping` from the start of a shutdown or reboot until the end). The agent says so in its last message to the host
// (agent.bye), so the host waits for the guest to come back instead of starting the agent again and remounting.
// Without systemd (a container, a test namespace) the answer is always no.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

/** systemd's own marker that it is PID 1 (sd_booted). */
const SYSTEMD_RUNTIME = '/run/systemd/system';

/**
 * True when systemd reports the system `stopping`; false without systemd, on any error, or after `timeoutMs`. The
 * answer takes 150-250 ms on an idle emulated (TCG) guest, and far longer in the middle of a shutdown, when every
 * service stops at once: at 1 s a reboot was now and then taken for a plain agent stop. systemd gives the agent's unit
 * far longer than this to stop.
 */
export function systemStopping(timeoutMs = 5_000): Promise<boolean> {
  if (!existsSync(SYSTEMD_RUNTIME)) return Promise.resolve(false);
  return new Promise((resolve) => {
    // is-system-running exits non-zero for every state but `running`: the state is read from stdout either way.
    execFile('systemctl', ['is-system-running'], { timeout: timeoutMs }, (_err, stdout) =>
      resolve(String(stdout).trim() === 'stopping'),
    );
  });
}
