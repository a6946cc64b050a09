#!/usr/bin/env bash
# Stops the test VM started by start.sh: QMP `quit`, then SIGTERM/SIGKILL to the recorded QEMU pid if it lingers.
# Usage: scripts/vm/stop.sh [STATE_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE=$(vm_state_dir "${1:-}")
if ! pid=$(vm_qemu_pid "$STATE"); then
	vm_log "no VM running from $STATE"
	rm -f "$STATE/qemu.pid" "$STATE/qmp.sock" "$STATE/ssh.port"
	exit 0
fi

# wait_gone SECONDS: true once the QEMU process has exited.
wait_gone() {
	local end=$((SECONDS + $1))
	while ((SECONDS < end)); do
		[[ -d /proc/$pid ]] || return 0
		sleep 0.2
	done
	[[ ! -d /proc/$pid ]]
}

if [[ -S $STATE/qmp.sock ]] && command -v socat >/dev/null; then
	printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"quit"}' |
		socat -t 2 - "UNIX-CONNECT:$STATE/qmp.sock" >/dev/null 2>&1 || true
fi
if ! wait_gone 10; then
	vm_log "QEMU (pid $pid) still running after QMP quit; sending SIGTERM"
	kill -TERM "$pid" 2>/dev/null || true
	wait_gone 10 || {
		vm_log "QEMU (pid $pid) ignored SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone 5 || vm_die "QEMU (pid $pid) did not exit"
	}
fi
rm -f "$STATE/qemu.pid" "$STATE/qmp.sock" "$STATE/ssh.port"
vm_log "VM stopped (pid $pid)"
