#!/usr/bin/env bash
# Boots tether's test VM (built by build-image.sh) under QEMU and waits until SSH works.
#
# Usage: scripts/vm/start.sh [STATE_DIR] [SSH_PORT]      (defaults: ~/.cache/tether-vm, 2222)
# Environment: VM_PERSIST=1 writes to rootfs.ext4 instead of a throw-away overlay (-snapshot);
#              VM_BOOT_TIMEOUT (seconds, default 300); VM_MEMORY_MB (2048); VM_CPUS (1: see README);
#              VM_KEEP_ON_FAILURE=1 leaves QEMU running when SSH never comes up (otherwise it is stopped).
# The guest's only link to the outside is QEMU user networking with restrict=on and one forward,
# 127.0.0.1:SSH_PORT -> guest:22. Writes qemu.pid, qmp.sock, serial.log and ssh.port into STATE_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE=$(vm_state_dir "${1:-}")
PORT=${2:-2222}
BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-300}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || vm_die "SSH_PORT must be a TCP port number, got '$PORT'"
for f in rootfs.ext4 vmlinuz initrd.img id_ed25519 known_hosts; do
	[[ -s $STATE/$f ]] || vm_die "missing $STATE/$f; run scripts/vm/build-image.sh $STATE first"
done
if pid=$(vm_qemu_pid "$STATE"); then
	vm_die "a VM from $STATE is already running (pid $pid, port $(cat "$STATE/ssh.port" 2>/dev/null)); stop it with scripts/vm/stop.sh $STATE"
fi
command -v qemu-system-x86_64 >/dev/null || {
	vm_log "installing qemu-system-x86"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 >/dev/null
}

# KVM only when this process can open /dev/kvm; otherwise TCG (multi-threaded, one host thread per vCPU).
# VM_ACCEL=tcg forces TCG; a KVM that opens but cannot run the guest (nested virtualisation refusing an MSR) falls
# back to TCG below.
TCG=(-accel tcg,thread=multi -cpu max)
if [[ ${VM_ACCEL:-auto} != tcg && -r /dev/kvm && -w /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
	exec 3>&-
	ACCEL=(-accel kvm -cpu host)
else
	ACCEL=("${TCG[@]}")
fi
# With -snapshot the writes go to a throw-away overlay, so host-side write caching cannot lose anything that matters.
SNAPSHOT=(-snapshot) CACHE=unsafe
[[ ${VM_PERSIST:-0} == 1 ]] && SNAPSHOT=() CACHE=writeback

rm -f "$STATE/qemu.pid" "$STATE/qmp.sock" "$STATE/serial.log"
started=$(vm_now)
run_qemu() {
	qemu-system-x86_64 \
		-name tether-vm -machine "${VM_MACHINE:-pc}" "$@" -smp "${VM_CPUS:-1}" -m "${VM_MEMORY_MB:-2048}" \
		-nodefaults -no-user-config -display none \
		-kernel "$STATE/vmlinuz" -initrd "$STATE/initrd.img" \
		-append "root=/dev/vda rootfstype=ext4 rw console=ttyS0 ${VM_QUIET-quiet} mitigations=off no_timer_check cryptomgr.notests tsc=reliable nowatchdog" \
		-drive "file=$STATE/rootfs.ext4,format=raw,if=virtio,cache=$CACHE,discard=unmap" "${SNAPSHOT[@]}" \
		-nic "user,restrict=on,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$PORT-:22" \
		-device virtio-rng-pci \
		-serial "file:$STATE/serial.log" \
		-qmp "unix:$STATE/qmp.sock,server=on,wait=off" \
		-pidfile "$STATE/qemu.pid" -daemonize 2>"$STATE/qemu.err"
}
if ! run_qemu "${ACCEL[@]}"; then
	[[ ${ACCEL[1]} == kvm ]] || vm_die "qemu-system-x86_64 failed to start: $(tail -3 "$STATE/qemu.err")"
	vm_log "KVM failed ($(tail -1 "$STATE/qemu.err")); starting with TCG instead"
	ACCEL=("${TCG[@]}")
	rm -f "$STATE/qemu.pid" "$STATE/qmp.sock" "$STATE/serial.log"
	run_qemu "${ACCEL[@]}" || vm_die "qemu-system-x86_64 failed to start: $(tail -3 "$STATE/qemu.err")"
fi
echo "$PORT" >"$STATE/ssh.port"
vm_log "QEMU running (pid $(cat "$STATE/qemu.pid"), ${ACCEL[1]}); waiting up to ${BOOT_TIMEOUT}s for ssh on 127.0.0.1:$PORT"

if ! vm_wait_ssh "$STATE" "$PORT" "$BOOT_TIMEOUT" >/dev/null; then
	# A VM that never became reachable is of no use to anyone; VM_KEEP_ON_FAILURE=1 keeps it for inspection.
	[[ ${VM_KEEP_ON_FAILURE:-0} == 1 ]] || "$VM_SCRIPTS_DIR/stop.sh" "$STATE"
	exit 1
fi
vm_log "boot to SSH took $(vm_elapsed "$started") s; connect with scripts/vm/ssh.sh (TETHER_VM_STATE=$STATE)"
