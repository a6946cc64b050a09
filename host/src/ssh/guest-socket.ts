// Why a unix socket in the guest cannot be opened over SSH. OpenSSH answers every failed direct-streamlocal open the
// same way ("open failed", reason 2 on OpenSSH 9.2): when the socket is missing, when nothing listens on it, when the
// login user may not connect to it, and when its configuration forbids unix-socket forwarding. So this looks at the
// socket from an exec channel as the login user sees it, and when it listens and is the user's to open yet a second
// channel still fails, the cause is sshd. Used for the guest agent's socket (provisioning, the agent link, doctor)
// and for unix socket forwards. Owns that shell snippet and the messages that name the fix; it opens nothing else.
import { posix } from 'node:path';
import type { ClientChannel } from 'ssh2';
import { sshdForwardingFix } from './advice.js';
import type { ExecResult } from './exec.js';
import { SshNotConnectedError } from './session.js';
import { shellQuote as q } from './shell-quote.js';
import { unrunScript } from './unrun-script.js';

/** What the checks need from an SSH session (SshSession satisfies it). */
export interface SocketShell {
  execText(command: string, timeoutMs?: number): Promise<ExecResult>;
  openStreamLocal(socketPath: string): Promise<ClientChannel>;
}

/** sshd refuses direct-streamlocal channels to a socket that a process listens on: nothing in the guest can help. */
export class StreamLocalRefusedError extends Error {
  override name = 'StreamLocalRefusedError';

  constructor(
    readonly socket: string,
    detail: string,
    listener = 'the guest agent',
  ) {
    super(
      `the guest's sshd refuses unix-socket forwarding: ${listener} listens on ${socket}, but the channel to it` +
        ` is rejected (${detail}): ${sshdForwardingFix('unix')}`,
    );
  }
}

export type GuestSocketState = 'absent' | 'not a socket' | 'not listening' | 'no access' | 'listening';

/** A guest socket as the login user sees it. */
export interface GuestSocketView {
  state: GuestSocketState;
  /** The login user (`id -un`). */
  user: string;
  /** For `no access`: the path that refuses the user (the socket or its directory) and its `owner:group:mode`. */
  denied?: { path: string; owner: string; group: string; mode: number };
}

const STATES: readonly string[] = ['absent', 'not a socket', 'not listening', 'no access', 'listening'];

/**
 * Looks at the socket over an exec channel. `listening` needs a listening unix socket bound to this path (or the
 * path it resolves to) in /proc/net/unix (flags 00010000: __SO_ACCEPTCON), not just a file: a stopped service leaves
 * its socket file behind. `test -w` mirrors connect(2), which needs write permission on a unix socket and search
 * permission on every directory above it; access is judged before listening, since it is what the user can fix.
 */
export async function guestSocketState(shell: Pick<SocketShell, 'execText'>, socket: string): Promise<GuestSocketView> {
  const script = [
    `S=${q(socket)}; export S`,
    'echo "user=$(id -un)"',
    `deny() { echo 'state=no access'; echo "denied=$(stat -c %U:%G:%a "$1" 2>/dev/null):$1"; exit 0; }`,
    // The highest directory on the way that the user cannot search: below it the socket would look absent.
    'd=$S; b=; while [ "$d" != / ] && [ "$d" != . ]; do d=$(dirname "$d"); [ -e "$d" ] && [ ! -x "$d" ] && b=$d; done',
    '[ -n "$b" ] && deny "$b"',
    '[ -e "$S" ] || { echo state=absent; exit 0; }',
    `[ -S "$S" ] || { echo 'state=not a socket'; exit 0; }`,
    '[ -w "$S" ] || deny "$S"',
    // /proc/net/unix lists the path the server bound, which may be the resolved one (systemd binds /run for a
    // configured /var/run).
    'R=$(readlink -f "$S" 2>/dev/null) || R=$S; export R',
    `awk '$4 == "00010000" && (ends($0, ENVIRON["S"]) || ends($0, ENVIRON["R"])) { f = 1 } END { exit !f }` +
      ` function ends(line, p) { return substr(line, length(line) - length(p)) == " " p }' /proc/net/unix ||` +
      ` { echo 'state=not listening'; exit 0; }`,
    'echo state=listening',
  ].join('\n');
  const r = await shell.execText(script, 15_000);
  const fields = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1).trim());
  }
  const state = fields.get('state') ?? '';
  if (r.code !== 0 || !STATES.includes(state))
    throw new Error(
      `checking ${socket} in the guest failed (exit ${r.code}): ${unrunScript(r) ?? (r.stderr || r.stdout).trim()}`,
    );
  const view: GuestSocketView = { state: state as GuestSocketState, user: fields.get('user') ?? '' };
  const denied = fields.get('denied')?.match(/^([^:]*):([^:]*):([0-7]+):(.*)$/);
  if (denied)
    view.denied = { owner: denied[1], group: denied[2], mode: Number.parseInt(denied[3], 8), path: denied[4] };
  return view;
}

/**
 * Tells whether a failed channel open to `socket` is sshd refusing unix-socket forwarding. Resolves with the error to
 * report, or null when the socket is absent, stale or not accessible (starting or reinstalling the agent is the fix),
 * or when a second open succeeds (the agent came up between the failed open and the look).
 */
export async function streamLocalRefusal(
  shell: SocketShell,
  socket: string,
  openError: Error,
  listener?: string,
): Promise<StreamLocalRefusedError | null> {
  if (openError instanceof SshNotConnectedError) return null;
  if ((await guestSocketState(shell, socket)).state !== 'listening') return null;
  return refusedOnSecondOpen(shell, socket, listener);
}

/** Why channels to a forwarded guest socket fail. */
export interface SocketFailure {
  /** One line naming the fix. */
  message: string;
  /** Nothing serves the socket (missing, or left by a service that stopped): its service is down. */
  serviceDown: boolean;
}

/**
 * Why channels to a forwarded guest socket fail; null when the cause is gone (a second open succeeds) or the SSH
 * connection is down (its own state says so).
 */
export async function socketOpenFailure(
  shell: SocketShell,
  socket: string,
  openError: Error,
): Promise<SocketFailure | null> {
  if (openError instanceof SshNotConnectedError) return null;
  const view = await guestSocketState(shell, socket);
  const down = (message: string) => ({ message, serviceDown: true });
  const other = (message: string | null | undefined) => (message ? { message, serviceDown: false } : null);
  switch (view.state) {
    case 'absent':
      return down(
        `guest socket ${socket} does not exist: its service is not running in the guest (or removed it as it stopped)${startHint(socket)}`,
      );
    case 'not a socket':
      return other(`guest path ${socket} is not a unix socket`);
    case 'not listening':
      return down(
        `nothing listens on guest socket ${socket}: the file is left from a service that stopped${startHint(socket)}`,
      );
    case 'no access':
      return other(noAccess(socket, view));
    case 'listening':
      return other((await refusedOnSecondOpen(shell, socket, 'a process'))?.message);
  }
}

/** The command that starts the service behind a well-known socket; the forward is back within a second of it. */
function startHint(socket: string): string {
  return posix.basename(socket) === 'docker.sock' ? '; start it in the guest: sudo systemctl start docker' : '';
}

function noAccess(socket: string, { user, denied }: GuestSocketView): string {
  if (!denied) return `guest user ${user} may not connect to ${socket}`;
  const { path, owner, group, mode } = denied;
  const what = path === socket ? socket : `${path} (the directory of ${socket})`;
  const head = `guest user ${user} may not connect to ${what}: owner ${owner}, group ${group}, mode ${mode.toString(8)}`;
  // Group write on the socket (search on a directory) is what membership would give.
  const groupBit = path === socket ? 0o020 : 0o010;
  // Membership of root's group would give far more than this socket: not a fix to suggest.
  if (mode & groupBit && group !== 'root' && group !== '0')
    return (
      `${head}; add ${user} to group ${group} in the guest (sudo usermod -aG ${group} ${user}), then run` +
      ' `tether down` and `tether up` (an SSH connection keeps the groups it logged in with)'
    );
  return `${head}; only ${owner} may connect: log in as ${owner} (ssh.user) or have the service open it to a group`;
}

async function refusedOnSecondOpen(
  shell: SocketShell,
  socket: string,
  listener?: string,
): Promise<StreamLocalRefusedError | null> {
  try {
    (await shell.openStreamLocal(socket)).destroy();
    return null;
  } catch (err) {
    if (err instanceof SshNotConnectedError) return null; // the connection dropped: nothing to tell yet
    return new StreamLocalRefusedError(socket, (err as Error).message, listener);
  }
}
