// Why the guest agent's socket cannot be opened over SSH. OpenSSH gives the same answer ("open failed", with the same
// reason code: 2 on OpenSSH 9.2) when its configuration forbids unix-socket forwarding and when nothing listens on
// the path, so this looks at the socket from an exec channel: a socket that a process listens on and the login user
// may connect to, yet whose channel sshd still rejects, means sshd refuses the forwarding — starting or reinstalling
// the agent cannot fix that. Owns that shell snippet and the error that names the sshd options; it neither starts
// nor opens anything else.
import type { ClientChannel } from 'ssh2';
import { type ExecResult, SshNotConnectedError } from '../ssh/index.js';
import { shellQuote as q } from '../ssh/shell-quote.js';

/** What the check needs from an SSH session (SshSession satisfies it). */
export interface SocketShell {
  execText(command: string, timeoutMs?: number): Promise<ExecResult>;
  openStreamLocal(socketPath: string): Promise<ClientChannel>;
}

/** sshd refuses direct-streamlocal channels to a guest agent that runs and listens: provisioning cannot help. */
export class StreamLocalRefusedError extends Error {
  override name = 'StreamLocalRefusedError';

  constructor(
    readonly socket: string,
    detail: string,
  ) {
    super(
      `the guest's sshd refuses unix-socket forwarding: the guest agent listens on ${socket}, but the channel to it` +
        ` is rejected (${detail}). In the guest's /etc/ssh/sshd_config (and any Match block for this user) set` +
        ' AllowStreamLocalForwarding yes (or local), AllowTcpForwarding yes (or local: OpenSSH applies it to unix' +
        ' sockets too) and DisableForwarding no, with no PermitOpen restriction; make sure the key in authorized_keys' +
        ' has no restrict, no-port-forwarding or permitopen option; reload sshd, then run `tether down` and' +
        ' `tether up` again (an SSH connection keeps the settings it was opened with)',
    );
  }
}

/** The socket as the login user sees it from a shell. */
export type AgentSocketState = 'absent' | 'not listening' | 'no access' | 'listening';

/**
 * Looks at the socket over an exec channel. `listening` needs a listening unix socket bound to exactly this path in
 * /proc/net/unix (flags 00010000: __SO_ACCEPTCON), not just a file: a killed agent leaves its socket file behind.
 * `test -w` mirrors connect(2), which needs write permission on a unix socket.
 */
export async function agentSocketState(
  shell: Pick<SocketShell, 'execText'>,
  socket: string,
): Promise<AgentSocketState> {
  const script = [
    `S=${q(socket)}; export S`,
    '[ -S "$S" ] || { echo absent; exit 0; }',
    `awk '$4 == "00010000" && substr($0, length($0) - length(ENVIRON["S"])) == " " ENVIRON["S"] { f = 1 }` +
      ` END { exit !f }' /proc/net/unix || { echo 'not listening'; exit 0; }`,
    '[ -w "$S" ] || { echo "no access"; exit 0; }',
    'echo listening',
  ].join('\n');
  const r = await shell.execText(script, 15_000);
  const state = r.stdout.trim();
  if (r.code !== 0 || !['absent', 'not listening', 'no access', 'listening'].includes(state))
    throw new Error(`checking ${socket} in the guest failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return state as AgentSocketState;
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
): Promise<StreamLocalRefusedError | null> {
  if (openError instanceof SshNotConnectedError) return null;
  if ((await agentSocketState(shell, socket)) !== 'listening') return null;
  try {
    (await shell.openStreamLocal(socket)).destroy();
    return null;
  } catch (err) {
    if (err instanceof SshNotConnectedError) return null; // the connection dropped: nothing to tell yet
    return new StreamLocalRefusedError(socket, (err as Error).message);
  }
}
