// Shell commands in the guest over exec channels (no pty): opening one with its exit status recorded, and running
// one to completion with its output collected, under one deadline that also covers the open (on a frozen VM the
// open goes unanswered until keepalives give up, longer than `tether down` waits for the agent). Used through
// SshSession (provisioning, the guest socket) and on a bare ssh2 Client (mounts, doctor). A command run for its
// output prints a marker first, and its stdout is what follows the marker: the login shell's startup output (a
// greeting, a terminal title, text without a newline) never reaches the parsers. Owns nothing long-lived.
import type { Client, ClientChannel, ExecOptions } from 'ssh2';
import { openSession } from './session-limit.js';
import { commandLabel, loginShellCommand } from './shell-quote.js';
import { afterMarker, startupMarker } from './startup-marker.js';

export interface ExecResult {
  /** The exit status; null when the command ended without one (a signal, a channel closed under it). */
  code: number | null;
  signal: string | null;
  /**
   * What the command printed, without the login shell's startup output; all that came when the command never started
   * (its marker never came), for messages that quote what the shell said instead.
   */
  stdout: string;
  stderr: string;
}

/** A guest command that did not finish in time (a hung mount it touched, a guest too busy to answer). */
export class GuestCommandTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    command: string,
  ) {
    super(`guest command timed out after ${timeoutMs}ms: ${commandLabel(command)}`);
    this.name = 'GuestCommandTimeoutError';
  }
}

/** An exec channel that remembers its exit status. */
export type ExecChannel = ClientChannel & { exitStatus: { code: number | null; signal: string | null } | null };

/** Each of stdout and stderr is kept up to this much; a command printing more is still run to its end. */
const OUTPUT_CAP = 1 << 20;

/**
 * Starts `command` as a POSIX sh script (loginShellCommand). The exit status is recorded on the channel as soon as it
 * arrives: ssh2 may emit 'exit' in the same tick as the open callback, before a listener added after `await` exists.
 * Throws synchronously when the client cannot send, as ssh2 does.
 */
export function startExec(
  client: Client,
  command: string,
  options: ExecOptions,
  cb: (err: Error | undefined, channel: ExecChannel) => void,
): void {
  client.exec(loginShellCommand(command), options, (err, channel) => {
    const ch = channel as ExecChannel;
    if (ch) {
      ch.exitStatus = null;
      ch.on('exit', (code: number | null, signal?: string) => {
        ch.exitStatus = { code, signal: signal ?? null };
      });
    }
    cb(err, ch);
  });
}

/**
 * startExec as a promise that rejects (never throws) when the client is not connected; a session refused by sshd's
 * session limit is tried again for a moment (openSession).
 */
export function openExec(client: Client, command: string, options: ExecOptions = {}): Promise<ExecChannel> {
  return openSession(
    () =>
      new Promise<ExecChannel>((resolve, reject) => {
        try {
          startExec(client, command, options, (err, channel) => (err ? reject(err) : resolve(channel)));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      }),
  );
}

/**
 * Runs `command` to completion on the channel `open` gives for it and collects its output; past `timeoutMs` from now
 * (the open included) it is abandoned and the channel closed, also one that opens late. The error names it by its
 * first line.
 */
export async function execText(
  open: (command: string) => Promise<ExecChannel>,
  command: string,
  timeoutMs: number,
): Promise<ExecResult> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = () => new GuestCommandTimeoutError(timeoutMs, command);
  const marker = startupMarker('tether-out');
  const opening = open(`${marker.print}; ${command}`);
  let openTimer: NodeJS.Timeout | undefined;
  const channel = await Promise.race([
    opening,
    new Promise<never>((_resolve, reject) => {
      openTimer = setTimeout(() => {
        opening.then(
          (late) => late.close(),
          () => {},
        );
        reject(timedOut());
      }, timeoutMs);
    }),
  ]).finally(() => clearTimeout(openTimer));
  return new Promise((resolve, reject) => {
    const out = new OutputBuffer();
    const err = new OutputBuffer();
    const timer = setTimeout(
      () => {
        channel.close();
        reject(timedOut());
      },
      Math.max(0, deadline - Date.now()),
    );
    channel.on('data', (chunk: Buffer) => out.add(chunk));
    channel.stderr.on('data', (chunk: Buffer) => err.add(chunk));
    channel.on('error', () => {
      // The 'close' that follows settles the promise.
    });
    channel.on('close', () => {
      clearTimeout(timer);
      const stdout = out.text();
      resolve({
        code: channel.exitStatus?.code ?? null,
        signal: channel.exitStatus?.signal ?? null,
        stdout: afterMarker(stdout, marker) ?? stdout,
        stderr: err.text(),
      });
    });
  });
}

/** How a command ended, for messages: `exit 2`, `killed by signal KILL`, `no exit status`. */
export function describeExit(r: Pick<ExecResult, 'code' | 'signal'>): string {
  if (r.signal) return `killed by signal ${r.signal}`;
  return r.code === null ? 'no exit status' : `exit ${r.code}`;
}

/** execText on a bare client. */
export function execOn(client: Client, command: string, timeoutMs = 15_000): Promise<ExecResult> {
  return execText((marked) => openExec(client, marked), command, timeoutMs);
}

/** One output stream of a command, kept up to OUTPUT_CAP bytes and decoded once at the end (UTF-8 split safely). */
class OutputBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  add(chunk: Buffer): void {
    if (this.size >= OUTPUT_CAP) return;
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
