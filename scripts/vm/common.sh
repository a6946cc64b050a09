# Shared state-directory layout, ssh options and readiness polling for tether's test VM helpers.
# Sourced by build-image.sh, start.sh, stop.sh, ssh.sh and reboot.sh; it runs nothing by itself.
# Every address used here is loopback: the VM is reached only through QEMU's hostfwd on 127.0.0.1.

VM_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_SSH_USER=${TETHER_VM_USER:-tether}
VM_HOST_KEY_ALIAS=tether-vm

# vm_state_dir [DIR]: the explicit argument, else $TETHER_VM_STATE, else ~/.cache/tether-vm.
vm_state_dir() {
	local dir=${1:-${TETHER_VM_STATE:-$HOME/.cache/tether-vm}}
	mkdir -p "$dir"
	(cd "$dir" && pwd)
}

vm_log() { printf '[tether-vm] %s\n' "$*" >&2; }
vm_die() {
	vm_log "error: $*"
	exit 1
}

# vm_now: seconds since the epoch with millisecond resolution, for elapsed-time reports.
vm_now() { date +%s.%N; }
vm_elapsed() { awk -v a="$1" -v b="$(vm_now)" 'BEGIN { printf "%.1f", b - a }'; }

# vm_ssh_opts STATE_DIR PORT: options that pin the image's host key and use only the image's client key.
vm_ssh_opts() {
	local state=$1 port=$2
	printf '%s\n' -F none -p "$port" \
		-o BatchMode=yes -o IdentitiesOnly=yes -o "IdentityFile=$state/id_ed25519" \
		-o "UserKnownHostsFile=$state/known_hosts" -o "HostKeyAlias=$VM_HOST_KEY_ALIAS" \
		-o StrictHostKeyChecking=yes -o ConnectTimeout=30 -o ServerAliveInterval=5 \
		-o ServerAliveCountMax=3 -o LogLevel=ERROR
}

# vm_port STATE_DIR: the SSH port the running VM forwards (recorded by start.sh).
vm_port() {
	local file="$1/ssh.port"
	[[ -s $file ]] || vm_die "no VM started from $1 (missing $file); run scripts/vm/start.sh first"
	cat "$file"
}

# vm_ssh STATE_DIR PORT CMD...: run CMD in the guest as the test user.
vm_ssh() {
	local state=$1 port=$2
	shift 2
	local opts
	mapfile -t opts < <(vm_ssh_opts "$state" "$port")
	ssh "${opts[@]}" "$VM_SSH_USER@127.0.0.1" "$@"
}

# vm_qemu_pid STATE_DIR: prints the pid recorded in qemu.pid while that process is a running QEMU.
vm_qemu_pid() {
	local file="$1/qemu.pid" pid
	[[ -s $file ]] || return 1
	pid=$(tr -dc 0-9 <"$file")
	[[ -n $pid ]] && grep -qa qemu-system "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

# vm_ssh_banner PORT: true when something on 127.0.0.1:PORT greets with an SSH banner within 10 s (sshd re-executes itself per connection, slow under TCG). QEMU's hostfwd
# accepts connections even while the guest is still booting, so an accepted connection alone proves nothing.
vm_ssh_banner() {
	local port=$1
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		IFS= read -r -t 10 line <&3 && [[ $line == SSH-* ]]
	) 2>/dev/null
}

# vm_wait_ssh STATE_DIR PORT DEADLINE_S [EXPECT_NOT_BOOT_ID]: poll until an ssh command succeeds (and, when given,
# reports a boot id different from EXPECT_NOT_BOOT_ID). Fails early when QEMU exits. Prints the boot id.
vm_wait_ssh() {
	local state=$1 port=$2 deadline_s=$3 old_boot=${4:-}
	local end=$((SECONDS + deadline_s)) boot
	while ((SECONDS < end)); do
		vm_qemu_pid "$state" >/dev/null || {
			vm_log "QEMU is no longer running; last serial output:"
			tail -n 30 "$state/serial.log" >&2 2>/dev/null
			return 1
		}
		if vm_ssh_banner "$port" &&
			boot=$(vm_ssh "$state" "$port" cat /proc/sys/kernel/random/boot_id 2>/dev/null) &&
			[[ -n $boot && $boot != "$old_boot" ]]; then
			echo "$boot"
			return 0
		fi
		sleep 0.5
	done
	vm_log "ssh to $VM_SSH_USER@127.0.0.1:$port did not succeed within ${deadline_s}s; last serial output:"
	tail -n 30 "$state/serial.log" >&2 2>/dev/null
	return 1
}
