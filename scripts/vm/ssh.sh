#!/usr/bin/env bash
# Runs ssh into the test VM started by start.sh, as the `tether` user, pinning the image's host key.
# Usage: scripts/vm/ssh.sh [ssh arguments or remote command...]
# Environment: TETHER_VM_STATE (default ~/.cache/tether-vm), TETHER_VM_USER (default tether; root also works).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE=$(vm_state_dir "")
vm_ssh "$STATE" "$(vm_port "$STATE")" "$@"
