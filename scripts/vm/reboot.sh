#!/usr/bin/env bash
# Reboots the test VM from inside (`sudo systemctl reboot` over ssh) and waits until SSH answers with a new boot id.
# QEMU keeps running across a guest reboot, so even with -snapshot the guest's disk changes survive it.
# Usage: scripts/vm/reboot.sh [STATE_DIR]      Environment: VM_BOOT_TIMEOUT (seconds, default 300).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE=$(vm_state_dir "${1:-}")
PORT=$(vm_port "$STATE")
old_boot=$(vm_ssh "$STATE" "$PORT" cat /proc/sys/kernel/random/boot_id) ||
	vm_die "cannot reach the VM on 127.0.0.1:$PORT before rebooting"
started=$(vm_now)
# The session may be cut by the reboot itself; success is judged by the new boot id below.
vm_ssh "$STATE" "$PORT" 'sudo systemctl reboot' || true
vm_wait_ssh "$STATE" "$PORT" "${VM_BOOT_TIMEOUT:-300}" "$old_boot" >/dev/null || exit 1
vm_log "rebooted; reboot to SSH took $(vm_elapsed "$started") s"
