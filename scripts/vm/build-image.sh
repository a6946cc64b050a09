#!/usr/bin/env bash
# Builds the Debian 12 (bookworm, amd64) disk image that tether's VM tests boot: an ext4 filesystem image
# (no partition table, no bootloader) plus the kernel and initrd taken out of it, for
# `qemu-system-x86_64 -kernel vmlinuz -initrd initrd.img -drive file=rootfs.ext4`.
#
# The guest plays a user's VM: sshd with key authentication only, a `tether` user with passwordless sudo, sshfs and
# fuse3 with Debian's stock /etc/fuse.conf (no user_allow_other: provisioning must deal with that), and no Node.js.
# Nothing in it reaches for the network (no apt timers, no time sync, no cloud-init).
#
# Usage: scripts/vm/build-image.sh [STATE_DIR]     (default $TETHER_VM_STATE or ~/.cache/tether-vm)
# Output in STATE_DIR: rootfs.ext4, vmlinuz, initrd.img, id_ed25519{,.pub} (client key), known_hosts (the image's
# host keys under the alias "tether-vm"), image.hash. The image is rebuilt only when the recipe changes: this
# script, the files under scripts/vm/guest/, the host's apt sources, or the client key.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE=$(vm_state_dir "${1:-}")
GUEST_FILES="$VM_SCRIPTS_DIR/guest"
SUITE=bookworm
PACKAGES=(
	systemd systemd-sysv udev dbus kmod linux-image-amd64 initramfs-tools zstd
	openssh-server sshfs fuse3 sudo python3 iproute2 procps passwd e2fsprogs
)
# Timers and services that would reach for the network or wake the guest for housekeeping during tests.
MASKED_UNITS=(
	apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
	man-db.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer
	systemd-timesyncd.service systemd-networkd-wait-online.service
	# Module loads for hardware the VM does not have (a display, device-mapper, EFI): each costs seconds under TCG.
	modprobe@drm.service modprobe@dm_mod.service modprobe@efi_pstore.service
)
# Content the guest never needs, removed after installation (dpkg's path-exclude trips over some packages'
# directories): keeps the image small and mkfs quick. Paths are relative to the root directory.
PRUNED_PATHS=(
	'usr/share/doc' 'usr/share/man' 'usr/share/info' 'usr/share/locale' 'usr/share/lintian'
	'var/cache/apt/archives/*.deb' 'var/lib/apt/lists/*_Packages'
)
for _dir in sound net/wireless net/mac80211 drivers/{gpu,media,infiniband,staging,iio,bluetooth,net/wireless,net/ethernet}; do
	PRUNED_PATHS+=("usr/lib/modules/*/kernel/$_dir")
done
IMAGE_SIZE_MB=3072

require() {
	local tool=$1 pkg=$2
	command -v "$tool" >/dev/null && return
	vm_log "installing $pkg (provides $tool)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
}

# apt_sources_file: the host's Debian sources, so the guest is built from the mirror apt already uses here.
apt_sources_file() {
	local f
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
		[[ -s $f ]] && grep -qE "^[^#]*($SUITE|Suites:)" "$f" && {
			echo "$f"
			return
		}
	done
	vm_die "no Debian $SUITE sources found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
}

recipe_hash() {
	local sources=$1
	{
		sha256sum "${BASH_SOURCE[0]}" "$sources" "$STATE/id_ed25519.pub" | cut -d' ' -f1
		(cd "$GUEST_FILES" && find . -type f -printf '%p %m\n' | sort && find . -type f -print0 | sort -z |
			xargs -0 sha256sum)
	} | sha256sum | cut -d' ' -f1
}

image_is_current() {
	local want=$1 f
	for f in rootfs.ext4 vmlinuz initrd.img known_hosts image.hash; do
		[[ -s $STATE/$f ]] || return 1
	done
	[[ $(cat "$STATE/image.hash") == "$want" ]]
}

# customize ROOT: everything the packages do not set up themselves. Runs on the finished root directory.
customize() {
	local root=$1 unit
	cp -r --no-preserve=ownership "$GUEST_FILES/." "$root/"
	chmod 0440 "$root/etc/sudoers.d/tether"
	chmod 0755 "$root/etc/initramfs-tools/hooks/tether-vm-virtio"

	chroot "$root" useradd --create-home --shell /bin/bash --groups sudo "$VM_SSH_USER"
	# '*' rather than the locked '!': no password works, yet the accounts are not "locked" for sshd.
	chroot "$root" usermod --password '*' "$VM_SSH_USER"
	chroot "$root" usermod --password '*' root
	local home
	for home in "/root" "/home/$VM_SSH_USER"; do
		install -d -m 0700 "$root$home/.ssh"
		install -m 0600 "$STATE/id_ed25519.pub" "$root$home/.ssh/authorized_keys"
	done
	chroot "$root" chown -R "$VM_SSH_USER:$VM_SSH_USER" "/home/$VM_SSH_USER/.ssh"

	for unit in "${MASKED_UNITS[@]}"; do
		ln -sf /dev/null "$root/etc/systemd/system/$unit"
	done
	systemctl --root="$root" enable systemd-networkd.service ssh.service >/dev/null 2>&1
	# A fixed machine id: otherwise every -snapshot boot is a "first boot" that re-applies unit presets.
	chroot "$root" systemd-machine-id-setup >/dev/null
	rm -f "$root/etc/motd"

	local path kver
	for path in "${PRUNED_PATHS[@]}"; do
		# Unquoted on purpose: each entry is a glob relative to the root directory.
		# shellcheck disable=SC2086
		rm -rf "${root:?}"/$path
	done
	for kver in "$root"/usr/lib/modules/*; do
		chroot "$root" depmod -a "${kver##*/}"
	done
}

# make_image ROOT OUT_DIR: the ext4 image, kernel, initrd and the pinned host keys.
make_image() {
	local root=$1 out=$2 kernels initrds
	kernels=("$root"/boot/vmlinuz-*)
	initrds=("$root"/boot/initrd.img-*)
	((${#kernels[@]} == 1)) && [[ -f ${kernels[0]} ]] || vm_die "expected one kernel in $root/boot, found: ${kernels[*]}"
	[[ -f ${initrds[0]} ]] || vm_die "no initrd in $root/boot (did update-initramfs run?)"
	cp "${kernels[0]}" "$out/vmlinuz"
	cp "${initrds[0]}" "$out/initrd.img"
	sed "s/^/$VM_HOST_KEY_ALIAS /" "$root"/etc/ssh/ssh_host_*_key.pub | cut -d' ' -f1-3 >"$out/known_hosts"

	truncate -s "${IMAGE_SIZE_MB}M" "$out/rootfs.ext4"
	mkfs.ext4 -q -F -L tether-root -d "$root" -E lazy_itable_init=0,lazy_journal_init=0 "$out/rootfs.ext4"
}

main() {
	((EUID == 0)) || vm_die "build-image.sh needs root (mmdebstrap in root mode, chroot, mkfs.ext4 -d)"
	require mmdebstrap mmdebstrap
	require mkfs.ext4 e2fsprogs
	require ssh-keygen openssh-client

	[[ -s $STATE/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C tether-vm-client -f "$STATE/id_ed25519"
	local sources want
	sources=$(apt_sources_file)
	want=$(recipe_hash "$sources")
	if image_is_current "$want"; then
		vm_log "image in $STATE is current (recipe $want); not rebuilding"
		return
	fi

	local started
	started=$(vm_now)
	# A tmpfs makes unpacking several times faster than a disk; the root tree needs about 600 MB.
	WORK=$(mktemp -d "${TETHER_VM_BUILD_TMP:-$([[ -d /dev/shm ]] && echo /dev/shm || echo "$STATE")}/tether-vm-build.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	mkdir "$WORK/root" "$WORK/out"

	local args=(--mode=root --variant=apt --architecture=amd64 --format=directory
		--include="$(
			IFS=,
			echo "${PACKAGES[*]}"
		)"
		# Downloaded packages are kept in STATE_DIR/debs: a rebuild after a recipe change fetches only what changed.
		--setup-hook='mkdir -p "$1/var/cache/apt/archives" && cp -a "$TETHER_VM_DEBS/." "$1/var/cache/apt/archives/"'
		--customize-hook='cp -a "$1/var/cache/apt/archives/"*.deb "$TETHER_VM_DEBS/"'
		# The initrd is generated while the kernel package installs, so its configuration goes in first.
		--essential-hook="cp -r --no-preserve=ownership '$GUEST_FILES/etc/initramfs-tools' \"\$1/etc/\"; chmod 0755 \"\$1/etc/initramfs-tools/hooks/tether-vm-virtio\""
	)
	vm_log "bootstrapping Debian $SUITE from the mirror in $sources"
	mkdir -p "$STATE/debs"
	TETHER_VM_DEBS="$STATE/debs" mmdebstrap "${args[@]}" "$SUITE" "$WORK/root" "$sources"
	customize "$WORK/root"
	make_image "$WORK/root" "$WORK/out"
	echo "$want" >"$WORK/out/image.hash"

	rm -f "$STATE/image.hash"
	mv -f "$WORK/out/"* "$STATE/"
	vm_log "image built in $(vm_elapsed "$started") s: $STATE/rootfs.ext4 ($(du -m --apparent-size "$STATE/rootfs.ext4" | cut -f1) MB apparent, $(du -m "$STATE/rootfs.ext4" | cut -f1) MB used)"
}

main
