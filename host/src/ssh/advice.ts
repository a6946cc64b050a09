// What to change in the guest when its sshd refuses what tether needs: the wording of the fix that the agent's
// errors, the forwards' states and `doctor` all give, kept in one place so they cannot drift apart.

/**
 * The sshd settings that let tether's channels through: `tcp` for forwarded ports, `unix` for unix sockets (the
 * guest agent's link, docker.sock), which OpenSSH also subjects to AllowTcpForwarding.
 */
export function sshdForwardingFix(kind: 'tcp' | 'unix'): string {
  const settings =
    kind === 'unix'
      ? 'AllowStreamLocalForwarding yes (or local), AllowTcpForwarding yes (or local: OpenSSH applies it to unix ' +
        'sockets too) and DisableForwarding no, with no PermitOpen restriction'
      : 'AllowTcpForwarding yes (or local), no PermitOpen that excludes this port, and DisableForwarding no';
  return (
    `in the guest's /etc/ssh/sshd_config (and any Match block for this user) set ${settings}; make sure the key in ` +
    'authorized_keys has no restrict, no-port-forwarding or permitopen option; reload sshd, then run `tether down` ' +
    'and `tether up` again (an SSH connection keeps the settings it was opened with)'
  );
}

/** The fix for a login the guest refuses with `identityFile` (undefined: the ssh-agent's keys). */
export function authorizedKeyFix(user: string, identityFile: string | undefined): string {
  return `put the public key of ${identityFile ?? 'your ssh-agent key'} in the guest's ~${user}/.ssh/authorized_keys`;
}
