// Why a guest script of tether's did not run at all, told from what came back: every script goes through the login
// shell as `exec /bin/sh -c '<script>'` (shell-quote.ts), and some login setups never get that far. Callers ask only
// when the output they expect is missing; this names the setup and its fix instead of "exit 0" and an empty output.
// Reads results only: it runs nothing.
import type { ExecResult } from './exec.js';

/** The fix that every case here shares: a login that runs a command given to it. */
const SHELLS = 'give the SSH user sh, bash, zsh or fish (e.g. sudo chsh -s /bin/bash USER)';

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

/**
 * What kept the script from running, as one sentence with the fix; null when the result looks like the script's own
 * (it ran and failed, or printed something else): then its own words say more.
 */
export function unrunScript(r: Pick<ExecResult, 'code' | 'stdout' | 'stderr'>): string | null {
  // csh and tcsh end a quoted argument at its first newline: no multi-line command can reach /bin/sh through them.
  if (/^Unmatched ['"`]+\.$/m.test(r.stderr))
    return (
      "the guest user's login shell looks like csh or tcsh, which cannot pass tether's commands on to /bin/sh " +
      `(it says: ${lastLine(r.stderr)}); ${SHELLS}`
    );
  // rbash (and bash -r) refuse `exec` and any command name with a slash.
  if (/\bexec: restricted\b/.test(r.stderr))
    return `the guest user's login shell is a restricted shell (rbash), which refuses to run /bin/sh (it says: ${lastLine(r.stderr)}); ${SHELLS}`;
  // Each script prints what it found on every path through it: silence and success together mean that something
  // ended the session before the script began.
  if (r.code === 0 && r.stderr.trim() === '') {
    const printed = r.stdout.trim() ? ` (all it printed: ${JSON.stringify(lastLine(r.stdout).slice(0, 200))})` : '';
    return (
      `the guest ran none of tether's command${printed}: the SSH user's login shell ended before it, e.g. an \`exit\` ` +
      'for non-interactive shells in ~/.bashrc, ~/.zshenv or config.fish (use `return` there, or nothing), or sshd runs ' +
      'another command in its place (ForceCommand in sshd_config, command= in authorized_keys); `ssh USER@HOST echo ok` must print ok'
    );
  }
  return null;
}
