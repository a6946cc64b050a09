// Running short shell commands in the guest over the agent's SSH connection (exec channels, no pty): quoting and
// output collection. Owns nothing long-lived; the sshfs channel itself is opened by mount.ts.
import type { Client, ClientChannel } from 'ssh2';
import { commandLabel, loginShellCommand } from '../ssh/shell-quote.js';
import { afterMarker, startupMarker } from './startup-output.js';

interface GuestResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Opens an exec channel running `cmd` as a POSIX sh script (loginShellCommand); rejects (never throws synchronously)
 * when the client is not connected.
 */
export function openExec(client: Client, cmd: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.exec(loginShellCommand(cmd), { pty: false }, (err, channel) => (err ? reject(err) : resolve(channel)));
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

/**
 * Runs `cmd` in the guest (after its login shell's startup) and collects its output; a command outliving timeoutMs
 * is abandoned. The deadline covers opening the channel too: on a frozen VM the open goes unanswered until
 * keepalives give up (30 s by default), longer than `tether down` waits for the agent.
 */
export async function execGuest(
  client: Client,
  cmd: string,
  timeoutMs = 15_000,
  label = commandLabel(cmd),
): Promise<GuestResult> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = () => new Error(`guest command timed out after ${timeoutMs}ms: ${label}`);
  const opening = openExec(client, cmd);
  let openTimer: NodeJS.Timeout | undefined;
  const channel = await Promise.race([
    opening,
    new Promise<never>((_resolve, reject) => {
      openTimer = setTimeout(() => {
        // A channel that opens after all is closed unused.
        opening.then(
          (late) => late.close(),
          () => {},
        );
        reject(timedOut());
      }, timeoutMs);
    }),
  ]).finally(() => clearTimeout(openTimer));
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(
      () => {
        channel.close();
        reject(timedOut());
      },
      Math.max(0, deadline - Date.now()),
    );
    channel.setEncoding('utf8');
    channel.stderr.setEncoding('utf8');
    channel.on('data', (d: string) => {
      stdout += d;
    });
    channel.stderr.on('data', (d: string) => {
      stderr += d;
    });
    channel.on('error', () => {
      // The 'close' that follows settles the promise.
    });
    // The exit status is taken from 'close', not 'exit': ssh2 emits 'exit' as soon as the packet is parsed, which
    // can be before the exec callback's promise continuation has attached any listener.
    channel.on('close', (c?: number | null, signal?: string) => {
      clearTimeout(timer);
      if (signal) stderr += `${stderr ? '\n' : ''}killed by signal ${signal}`;
      resolve({ code: typeof c === 'number' ? c : signal ? 128 : -1, stdout, stderr });
    });
  });
}

/**
 * Like execGuest, for commands whose stdout is parsed: whatever the login shell's startup files print (rc files that
 * greet) is cut off at a marker printed first, so stdout holds only `cmd`'s output. When the marker never came (the
 * shell failed before running anything), stdout is empty and the exit code says so.
 */
export async function execGuestOutput(client: Client, cmd: string, timeoutMs?: number): Promise<GuestResult> {
  const marker = startupMarker('tether-out');
  const r = await execGuest(client, `${marker.print}; ${cmd}`, timeoutMs, commandLabel(cmd));
  return { ...r, stdout: afterMarker(r.stdout, marker) ?? '' };
}
