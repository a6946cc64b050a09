// Shared setup for the mount integration tests: an ssh2 connection to the testbed as its login user (or the chatty
// one, whose shell prints on startup), a host export directory, a guest mount point owned by that user, and a
// MountManager with a recording event sink.
import { createHash } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FsEvents } from '@tether/protocol';
import { pino } from 'pino';
import { Client } from 'ssh2';
import { MountConfig } from '../../host/src/config/schema.js';
import { type Logger, silentLogger } from '../../host/src/log.js';
import type { MountView } from '../../host/src/model.js';
import { MountManager } from '../../host/src/mount/index.js';
import type { Testbed } from './testbed.js';
import { waitFor } from './wait.js';

/** The testbed's second login user: bash, with a ~/.bashrc that prints on startup (scripts/testbed.sh). */
export const CHATTY_USER = 'tether-tb-chatty';

export function connect(tb: Testbed, user = tb.user): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once('ready', () => {
      // Without it every small SFTP round trip waits for a delayed ACK (~40 ms).
      c.setNoDelay(true);
      resolve(c);
    });
    c.once('error', reject);
    c.connect({
      host: '127.0.0.1',
      port: tb.sshPort,
      username: user,
      privateKey: readFileSync(tb.identityFile),
      hostVerifier: () => true,
      readyTimeout: 20_000,
    });
  });
}

export function loginIds(user: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no user ${user}`);
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

let counter = 0;

export interface MountFixture {
  manager: MountManager;
  client: Client;
  location: string;
  /** As configured. */
  mountPoint: string;
  batches: FsEvents[];
  changes: MountView[];
  stop(): Promise<void>;
}

export interface StartMountOptions {
  /** Guest login user (default the testbed's, whose shell prints nothing). */
  user?: string;
  /**
   * The mount point as configured. Default: a fresh directory in the testbed's state directory. An absolute one is
   * created and given to the user; one starting with `~` is left to tether.
   */
  mountPoint?: string;
  logger?: Logger;
  /** Resolve even when the mount did not come up (the caller checks the view and calls stop()). */
  allowError?: boolean;
  /** `location` is a symlink to the export directory (a linked project directory; /tmp on macOS). */
  linkedLocation?: boolean;
}

export async function startMount(
  tb: Testbed,
  cfg: Partial<MountConfig> & { driver: 'builtin' | 'openssh' },
  opts: StartMountOptions = {},
): Promise<MountFixture> {
  counter += 1;
  const user = opts.user ?? tb.user;
  const exported = mkdtempSync(join(tmpdir(), `tether-export-${cfg.driver}-`));
  const location = opts.linkedLocation ? `${exported}.link` : exported;
  if (opts.linkedLocation) symlinkSync(exported, location);
  const mountPoint = opts.mountPoint ?? join(tb.stateDir, `mnt-${cfg.driver}-${counter}`);
  if (mountPoint.startsWith('/')) {
    mkdirSync(mountPoint, { recursive: true });
    const { uid, gid } = loginIds(user);
    chownSync(mountPoint, uid, gid);
  }
  const config = MountConfig.parse({ writable: true, inotify: false, ...cfg, location, mountPoint });
  const batches: FsEvents[] = [];
  const changes: MountView[] = [];
  const logger = opts.logger ?? silentLogger();
  const manager = new MountManager([config], { logger, onChange: (v) => changes.push(v) });
  const client = await connect(tb, user);
  await manager.start(client, (b) => {
    batches.push(b);
    return true;
  });
  const view = manager.views()[0];
  if (view.state !== 'mounted' && !opts.allowError) {
    await manager.stop();
    client.end();
    removeExport(exported, location);
    throw new Error(`mount did not come up: ${view.state} ${view.error}`);
  }
  return {
    manager,
    client,
    location,
    mountPoint,
    batches,
    changes,
    async stop() {
      await manager.stop();
      client.end();
      removeExport(exported, location);
    },
  };
}

function removeExport(exported: string, location: string): void {
  if (location !== exported) rmSync(location, { force: true });
  rmSync(exported, { recursive: true, force: true });
}

/** Runs a shell command in the guest as the login user; throws with its output when it fails. */
export async function guest(tb: Testbed, cmd: string, timeoutMs = 120_000): Promise<string> {
  const r = await tb.exec(cmd, { user: tb.user, timeoutMs });
  if (r.code !== 0) throw new Error(`guest command failed (${r.code}): ${cmd}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Like guest() but resolves with the exit code and stderr, for commands expected to fail. */
export async function guestTry(tb: Testbed, cmd: string): Promise<{ code: number; out: string }> {
  const r = await tb.exec(cmd, { user: tb.user });
  return { code: r.code, out: r.stderr + r.stdout };
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export { waitFor };

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A real pino logger whose lines are kept for assertions. */
export function recordingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}
