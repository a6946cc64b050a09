// Serving SFTP for one mount on the stdio of its sshfs exec channel: the builtin server (host/src/sftp/) or the
// host's OpenSSH `sftp-server` binary piped to the channel through the marker-touch filter (sftp/marker-filter.ts:
// the guest applier's touches change nothing there either, and its change tap names what the guest changes). Owns
// the server side of one session and its child process; it does not open or close SSH channels itself beyond
// ending the stream it was given.
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { MountConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { type ChangeListener, ChangeTap, markerFilter, serveSftp } from '../sftp/index.js';

/** Where distributions install OpenSSH's sftp-server when it is not on PATH. */
const SFTP_SERVER_PATHS = [
  '/usr/lib/openssh/sftp-server',
  '/usr/libexec/openssh/sftp-server',
  '/usr/libexec/sftp-server',
  '/usr/lib/ssh/sftp-server',
  '/usr/lib/sftp-server',
];

function executable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The host's OpenSSH sftp-server, or null when none is installed. */
export function findSftpServer(pathEnv = process.env.PATH ?? ''): string | null {
  const onPath = pathEnv
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, 'sftp-server'));
  return [...onPath, ...SFTP_SERVER_PATHS].find(executable) ?? null;
}

/** One running SFTP server session. Emits 'close' with a reason once. */
export interface DriverSession extends EventEmitter {
  close(reason: string): void;
}

class BuiltinSession extends EventEmitter implements DriverSession {
  private readonly session;
  constructor(stream: Duplex, mount: MountConfig, log: Logger, onChange?: ChangeListener) {
    super();
    this.session = serveSftp(stream, { root: mount.location, readOnly: !mount.writable, log, onChange });
    this.session.once('close', (e: { reason?: string }) => this.emit('close', e?.reason ?? 'sftp session closed'));
  }
  close(reason: string): void {
    this.session.close(reason);
  }
}

class OpensshSession extends EventEmitter implements DriverSession {
  private readonly child: ChildProcess;
  private closed = false;
  private stderr = '';

  constructor(
    private readonly stream: Duplex,
    binary: string,
    mount: MountConfig,
    private readonly log: Logger,
    onChange?: ChangeListener,
  ) {
    super();
    const args = ['-e', '-d', mount.location, ...(mount.writable ? [] : ['-R'])];
    this.child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const { stdin, stdout, stderr } = this.child;
    if (!stdin || !stdout || !stderr) throw new Error(`cannot start ${binary}: no stdio pipes`);
    const filter = markerFilter(log, onChange ? new ChangeTap(mount.location, onChange) : null);
    stream.pipe(filter.requests).pipe(stdin);
    stdout.pipe(filter.replies).pipe(stream, { end: false });
    // pipe() forwards no errors: without these an error in the filter would be uncaught, and end the whole agent.
    for (const side of [filter.requests, filter.replies])
      side.on('error', (err: Error) => this.close(`sftp filter error: ${err.message}`));
    stderr.setEncoding('utf8').on('data', (d: string) => {
      // Kept short: only the tail explains an exit.
      this.stderr = (this.stderr + d).slice(-2048);
    });
    stdin.on('error', () => undefined); // EPIPE after the child exits; 'exit' reports it.
    this.child.once('error', (err) => this.finish(`cannot run ${binary}: ${err.message}`));
    this.child.once('exit', (code, signal) => {
      const detail = this.stderr.trim() ? `: ${this.stderr.trim()}` : '';
      this.finish(`sftp-server exited (${signal ?? `code ${code}`})${detail}`);
    });
    stream.once('close', () => this.close('channel closed'));
    stream.on('error', (err: Error) => this.close(`channel error: ${err.message}`));
  }

  close(reason: string): void {
    if (this.closed) return;
    // The child exits on stdin EOF; SIGTERM makes sure it does even if the channel never ends.
    this.child.stdin?.end();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.log.debug({ reason }, 'sftp-server session ended');
    if (!this.stream.destroyed) this.stream.end();
    this.emit('close', reason);
  }
}

/**
 * Serves one sshfs session with the mount's driver; throws when the openssh driver has no binary. `onChange` hears
 * of every change the guest makes through it: from tether's own server, or read off the requests to sftp-server.
 */
export function serveMount(stream: Duplex, mount: MountConfig, log: Logger, onChange?: ChangeListener): DriverSession {
  if (mount.driver === 'builtin') return new BuiltinSession(stream, mount, log, onChange);
  const binary = findSftpServer();
  if (!binary) {
    throw new Error(
      `driver openssh for ${mount.location}: no sftp-server found on PATH or in ${SFTP_SERVER_PATHS.join(', ')}`,
    );
  }
  return new OpensshSession(stream, binary, mount, log, onChange);
}
