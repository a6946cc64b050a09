// A one-time marker line a guest command prints before anything else, so that whatever the SSH user's login shell
// prints on startup (rc files that greet, set a terminal title, print without a newline) can be cut off from the
// command's own output. Used for commands run for their output (exec.ts) and the sshfs channel (mount/).
import { randomBytes } from 'node:crypto';

interface StartupMarker {
  /** Shell command printing the marker line. */
  print: string;
  /** The exact bytes it prints (the line, newline included). */
  bytes: Buffer;
}

/**
 * A fresh marker. The command prints it from two printf arguments, so the marker itself never appears in the
 * command text: a startup file that echoes the command it is about to run (a DEBUG trap, `$BASH_EXECUTION_STRING`)
 * cannot produce a false match. The random part keeps startup output from containing it by chance.
 */
export function startupMarker(tag = 'tether-start'): StartupMarker {
  const nonce = randomBytes(12).toString('hex');
  return { print: `printf '%s-%s\\n' ${tag} ${nonce}`, bytes: Buffer.from(`${tag}-${nonce}\n`) };
}

/** The command's stdout after the marker, or null when the marker never came (the command did not run). */
export function afterMarker(stdout: string, marker: StartupMarker): string | null {
  const at = stdout.indexOf(marker.bytes.toString());
  return at < 0 ? null : stdout.slice(at + marker.bytes.length);
}
