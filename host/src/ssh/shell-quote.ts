// POSIX-shell quoting for the commands tether runs in the guest over exec channels (provisioning, mounts). sshd hands
// every exec request to the login user's shell, so each word from configuration or the guest is quoted.

/** Single-quotes `s` for a POSIX shell, unless it consists only of characters that need no quoting. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}
