// Copies one local file into the guest, saying how far it got by quarters (the single executable is ~100 MB: tens of
// seconds to an emulated guest). Over SFTP where the guest's sshd offers it; where it does not (a hardened
// sshd_config without `Subsystem sftp`, Alpine's openssh-server without openssh-sftp-server), through `cat` on an
// exec channel, which every guest can run. The caller installs the copy and cleans up after a failure.
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { SFTPWrapper } from 'ssh2';
import { describeExit, type ExecChannel } from '../ssh/exec.js';
import { shellQuote as q } from '../ssh/shell-quote.js';

export interface UploadShell {
  sftp(): Promise<SFTPWrapper>;
  exec(command: string): Promise<ExecChannel>;
}

type Progress = (done: number) => void;

/** Copies `local` to `remote` (mode 0755); `onStep` hears the progress. Resolves with how it went: sftp or exec. */
export async function sendFile(
  shell: UploadShell,
  local: string,
  remote: string,
  onStep?: (what: string) => void,
): Promise<'sftp' | 'exec'> {
  const total = statSync(local).size;
  const progress = quarters(basename(local), total, onStep);
  progress(0);
  let sftp: SFTPWrapper;
  try {
    sftp = await shell.sftp();
  } catch (err) {
    if (!noSftpSubsystem(err as Error)) throw err;
    await sendByExec(shell, local, remote, progress);
    return 'exec';
  }
  try {
    await sendBySftp(sftp, local, remote, progress);
  } finally {
    sftp.end();
  }
  return 'sftp';
}

/**
 * ssh2's errors for a guest sshd without an SFTP server: no such subsystem, or one whose program exited at once
 * (126 or 127 from the shell sshd runs it with: missing, not executable).
 */
function noSftpSubsystem(err: Error): boolean {
  return /Unable to start subsystem|exit code \d+ while establishing SFTP session/.test(err.message);
}

function sendBySftp(sftp: SFTPWrapper, local: string, remote: string, progress: Progress): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // ssh2 removes its own 'error' listener once the SFTP session is ready: without this one a malformed packet
    // from the guest's SFTP server is an unhandled 'error' that ends the host agent. It stays attached (a no-op
    // once settled) for an error that arrives while the session closes.
    sftp.on('error', (err: Error) =>
      reject(new Error(`uploading ${local} to the guest's ${remote} failed: the guest's SFTP server: ${err.message}`)),
    );
    sftp.fastPut(local, remote, { mode: 0o755, step: (done) => progress(done) }, (err) =>
      err ? reject(new Error(`uploading ${local} to the guest's ${remote} failed: ${err.message}`)) : resolve(),
    );
  });
}

async function sendByExec(shell: UploadShell, local: string, remote: string, progress: Progress): Promise<void> {
  const fail = (why: string) =>
    new Error(`uploading ${local} to the guest's ${remote} (no SFTP server) failed: ${why}`);
  const channel = await shell.exec(`umask 022 && cat > ${q(remote)}`);
  let stderr = '';
  channel.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-2048);
  });
  const closed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
  // Whatever the login shell prints (cat itself prints nothing) must not hold the channel's window.
  channel.resume();
  let done = 0;
  const file = createReadStream(local);
  file.on('data', (chunk) => {
    done += chunk.length;
    progress(done);
  });
  try {
    await pipeline(file, channel);
  } catch (err) {
    channel.close();
    throw fail(stderr.trim() || (err as Error).message);
  }
  await closed;
  const status = channel.exitStatus;
  if (status?.code !== 0) throw fail(stderr.trim() || (status ? describeExit(status) : 'no exit status'));
}

/** A progress callback that tells `onStep` each quarter once. */
function quarters(name: string, total: number, onStep?: (what: string) => void): Progress {
  const mb = (n: number) => Math.round(n / 1e6);
  let shown = -1;
  return (done) => {
    const quarter = Math.floor((4 * done) / Math.max(total, 1));
    if (quarter === shown || quarter >= 4) return;
    shown = quarter;
    onStep?.(`uploading ${name}: ${mb(done)} of ${mb(total)} MB`);
  };
}
