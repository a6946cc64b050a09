// POSIX-shell quoting for the remote shell snippets that provisioning runs in the guest. Owns nothing else.

/** Single-quotes `s` for a POSIX shell, unless it consists only of characters that need no quoting. */
export function q(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
