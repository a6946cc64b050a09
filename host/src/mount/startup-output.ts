// Separating what the guest user's shell prints on startup from a guest command's own stdout. sshd runs every exec
// request through the login shell, and bash (~/.bashrc, for ssh commands too), zsh (~/.zshenv) and fish
// (config.fish) read startup files even when not interactive; anything those print lands on the channel's stdout
// ahead of the command's output. For the sshfs channel that output would be read as an SFTP packet length. So the
// command prints a one-time marker line first (ssh/startup-marker.ts), and the host drops stdout up to and including
// it. Owns the bounded scan and the message telling the user which startup file to fix; nothing here opens channels.
import { basename } from 'node:path';
import type { Readable } from 'node:stream';

/** Startup output allowed before the marker; beyond it the shell is hopelessly chatty (or the marker is lost). */
export const MAX_STARTUP_OUTPUT = 64 * 1024;

/** How many bytes of startup output messages quote. */
const QUOTE_BYTES = 200;

/** The first bytes of startup output as a quoted, escaped string for messages and logs. */
export function quoteStartup(output: Buffer): string {
  const head = JSON.stringify(output.subarray(0, QUOTE_BYTES).toString('utf8'));
  return output.length > QUOTE_BYTES ? `${head}...` : head;
}

/** Which startup file to fix, for the guest user's login shell (`$SHELL` in the guest; null when unknown). */
export function startupFileHint(shell: string | null): string {
  switch (shell ? basename(shell) : '') {
    case 'bash':
      return 'make ~/.bashrc in the guest print nothing unless the shell is interactive (bash reads it for ssh commands too), e.g. start it with: case $- in *i*) ;; *) return ;; esac';
    case 'zsh':
      return 'make ~/.zshenv in the guest print nothing unless the shell is interactive (zsh reads it for every command): move the output to ~/.zshrc or guard it with [[ -o interactive ]]';
    case 'fish':
      return 'make ~/.config/fish/config.fish (and conf.d/) in the guest print nothing unless the shell is interactive: guard the output with "if status is-interactive ... end"';
    default:
      return `make the startup files of the guest user's login shell${shell ? ` (${shell})` : ''} print nothing for non-interactive commands (~/.bashrc for bash, ~/.zshenv for zsh, ~/.config/fish/config.fish for fish)`;
  }
}

/** The shell printed too much before the marker, or the command never printed it. */
export class StartupOutputError extends Error {
  override name = 'StartupOutputError';
  constructor(
    message: string,
    /** What arrived before the failure (the shell's output), for logs. */
    readonly output: Buffer,
  ) {
    super(message);
  }
}

/** The stream closed before the marker: the command failed before it started (its stderr says why). */
export class ClosedBeforeMarkerError extends Error {
  override name = 'ClosedBeforeMarkerError';
  constructor(readonly output: Buffer) {
    super('the guest command ended before it started');
  }
}

interface SkipOptions {
  /** Fail after this many bytes of startup output (default MAX_STARTUP_OUTPUT). */
  limit?: number;
  timeoutMs: number;
  /** The guest user's login shell, for the hint in errors. */
  shell?: string | null;
}

/**
 * Reads `stream` up to and including the marker and resolves with what came before it (the shell's startup output,
 * usually empty). The stream is left paused with the bytes after the marker pushed back, so the next consumer sees
 * exactly the command's output; it must resume() the stream after attaching. Nothing is interposed on the stream:
 * after the marker its data flows to the next consumer at no extra cost.
 */
export function skipStartupOutput(stream: Readable, marker: Buffer, opts: SkipOptions): Promise<Buffer> {
  const limit = opts.limit ?? MAX_STARTUP_OUTPUT;
  return new Promise((resolve, reject) => {
    let seen = Buffer.alloc(0);
    const finish = (err: Error | null, prefix?: Buffer) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.off('error', onError);
      if (err) reject(err);
      else resolve(prefix ?? Buffer.alloc(0));
    };
    const onData = (chunk: Buffer | string) => {
      seen = Buffer.concat([seen, typeof chunk === 'string' ? Buffer.from(chunk) : chunk]);
      const at = seen.indexOf(marker);
      if (at >= 0) {
        // Paused before finish() returns: a chunk emitted now would reach no listener and be lost.
        stream.pause();
        const rest = seen.subarray(at + marker.length);
        if (rest.length > 0) stream.unshift(rest);
        finish(null, seen.subarray(0, at));
        return;
      }
      if (seen.length >= limit + marker.length) {
        finish(
          new StartupOutputError(
            `the guest's shell printed output on startup (more than ${Math.round(limit / 1024)} KiB before sshfs could start), ` +
              `which would corrupt the SFTP stream: ${quoteStartup(seen)}; ${startupFileHint(opts.shell ?? null)}`,
            seen,
          ),
        );
      }
    };
    const onClose = () => finish(new ClosedBeforeMarkerError(seen));
    const onError = (err: Error) => finish(err);
    const timer = setTimeout(() => {
      const printed = seen.length > 0 ? `; the guest's shell printed ${quoteStartup(seen)} and never ran it` : '';
      finish(
        new StartupOutputError(
          `the guest command did not start sshfs within ${opts.timeoutMs / 1000}s${printed}`,
          seen,
        ),
      );
    }, opts.timeoutMs);
    timer.unref();
    stream.on('data', onData);
    stream.once('close', onClose);
    stream.once('error', onError);
  });
}
