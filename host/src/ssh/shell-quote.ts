// Shell quoting for the commands tether runs in the guest over exec channels (provisioning, mounts, socket checks).
// sshd hands every exec request to the login user's shell, which may be bash, zsh or fish as well as a POSIX sh: each
// command is therefore run as `exec /bin/sh -c '<script>'`, quoted so that all of them read the same words, and the
// scripts themselves are plain POSIX sh.

/**
 * Single-quotes `s` unless it consists only of characters that need no quoting. A backslash is written outside the
 * quotes (`'\\'`): fish, unlike POSIX shells, reads `\\` and `\'` inside single quotes as escapes.
 */
export function shellQuote(s: string): string {
  if (/^[\w@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/['\\]/g, (c) => (c === "'" ? `'\\''` : `'\\\\'`))}'`;
}

/**
 * The exec request for a POSIX sh script, whatever the login shell. The login shell still starts first and reads
 * the startup files it reads for a command (bash as sshd runs it: ~/.bashrc; zsh: ~/.zshenv; fish: config.fish; not
 * a login profile), so what those export (a PATH with nvm's node, say) reaches the script.
 */
export function loginShellCommand(script: string): string {
  return `exec /bin/sh -c ${shellQuote(script)}`;
}

/**
 * A script as messages name it: its first line that says something (not blank or a bare `echo`), at most 80
 * characters, with `…` when more follows. Scripts run to dozens of lines.
 */
export function commandLabel(script: string): string {
  const lines = script.split('\n');
  const said = (l: string) => !/^\s*(echo\s*)?$/.test(l);
  const i = Math.max(0, lines.findIndex(said));
  const line = (lines[i] ?? '').trim();
  const more = lines.slice(i + 1).some((l) => l.trim() !== '');
  return line.length > 80 || more ? `${line.slice(0, 80)} …` : line;
}
