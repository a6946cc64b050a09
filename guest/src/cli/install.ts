// `tether-guest install` / `uninstall`: puts the agent's own executable under /usr/local/lib/tether-guest and runs it
// as a systemd service (Restart=always). Owns the unit text, the copy and the systemctl steps; idempotent — the
// service is restarted only when the unit or the executable changed.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

export const SERVICE_NAME = 'tether-guest.service';

interface InstallOptions {
  socketOwner: string;
  socketPath?: string;
  /** Restart the service even when nothing changed: a running agent whose socket does not answer. */
  restart?: boolean;
  libDir?: string;
  unitDir?: string;
  /** Runs `systemctl <args>` (injected in tests). */
  systemctl?: (args: string[]) => void;
  /** What is running now: the single executable, or node + the bundle (injected in tests). */
  self?: SelfExecutable;
}

type SelfExecutable = { kind: 'sea'; path: string } | { kind: 'bundle'; node: string; path: string };

interface InstallResult {
  unitPath: string;
  execPath: string;
  changed: boolean;
}

const DEFAULT_LIB_DIR = '/usr/local/lib/tether-guest';
const DEFAULT_UNIT_DIR = '/etc/systemd/system';

function defaultSystemctl(args: string[]): void {
  execFileSync('systemctl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Whether this process is the single executable. `node:sea` exists only from Node 20.12 / 21.7, and the bundle also
 * runs on older Node 20 and 21 in the guest: a top-level import would end it there before anything ran. A Node without
 * the module is not one of our single executables (those are built with the build machine's newer Node).
 */
function isSea(): boolean {
  // Any absolute path serves as createRequire's base for a builtin; import.meta.url is empty in the CJS bundle.
  const require = createRequire(process.execPath);
  let sea: typeof import('node:sea');
  try {
    sea = require('node:sea');
  } catch {
    return false;
  }
  return sea.isSea();
}

function currentExecutable(): SelfExecutable {
  if (isSea()) return { kind: 'sea', path: process.execPath };
  if (!process.argv[1]) throw new Error('cannot tell which file is running (no script path in argv)');
  return { kind: 'bundle', node: process.execPath, path: resolve(process.argv[1]) };
}

/** Writes `content` to `path` (atomically, so a running copy is never modified) unless it is already there. */
function writeIfChanged(path: string, content: Buffer | string, mode: number): boolean {
  const next = typeof content === 'string' ? Buffer.from(content) : content;
  if (existsSync(path) && readFileSync(path).equals(next)) return false;
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, next, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
  return true;
}

function quoteArg(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, '\\$1')}"`;
}

function unitText(execStart: string[]): string {
  return `[Unit]
Description=tether guest agent (port forwarding and file events for the host)
After=network.target
# Never stop restarting: systemd's default start limit would leave the agent dead after a few quick crashes.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=${execStart.map(quoteArg).join(' ')}
Restart=always
RestartSec=1
# A socket per UDP flow (up to 1,024) besides its own: systemd's default soft limit of 1024 open files is too few.
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

export function install(options: InstallOptions): InstallResult {
  const libDir = options.libDir ?? DEFAULT_LIB_DIR;
  const unitPath = join(options.unitDir ?? DEFAULT_UNIT_DIR, SERVICE_NAME);
  const systemctl = options.systemctl ?? defaultSystemctl;
  const self = options.self ?? currentExecutable();
  mkdirSync(libDir, { recursive: true, mode: 0o755 });

  const execPath = join(libDir, self.kind === 'sea' ? 'tether-guest' : 'tether-guest.cjs');
  let changed = false;
  if (resolve(self.path) !== execPath) changed = writeIfChanged(execPath, readFileSync(self.path), 0o755);
  const command = self.kind === 'sea' ? [execPath] : [self.node, execPath];
  const args = ['run', '--socket-owner', options.socketOwner];
  if (options.socketPath) args.push('--socket', options.socketPath);
  const unitChanged = writeIfChanged(unitPath, unitText([...command, ...args]), 0o644);

  if (unitChanged) systemctl(['daemon-reload']);
  systemctl(['enable', SERVICE_NAME]);
  systemctl([changed || unitChanged || options.restart ? 'restart' : 'start', SERVICE_NAME]);
  return { unitPath, execPath, changed: changed || unitChanged };
}

export function uninstall(options: Pick<InstallOptions, 'libDir' | 'unitDir' | 'systemctl'> = {}): void {
  const unitPath = join(options.unitDir ?? DEFAULT_UNIT_DIR, SERVICE_NAME);
  const systemctl = options.systemctl ?? defaultSystemctl;
  if (existsSync(unitPath)) {
    systemctl(['disable', '--now', SERVICE_NAME]);
    rmSync(unitPath);
    systemctl(['daemon-reload']);
  }
  rmSync(options.libDir ?? DEFAULT_LIB_DIR, { recursive: true, force: true });
}
