#!/usr/bin/env bash
# tether testbed: a network namespace that plays the VM.
#
# Owns one namespace `tb-NAME` with a real OpenSSH sshd (own config, own host key) on the namespace's 127.0.0.1:22
# and [::1]:22 (TETHER_TESTBED_GUEST_SSH_PORT picks another port), and a loopback-only bridge from the host's
# 127.0.0.1:PORT to it (socat TCP → unix socket → socat in the namespace → sshd), which mirrors QEMU's hostfwd.
# Every process it starts is recorded as "pid starttime" under the state dir and is the only thing it ever stops.
# Only the network namespace is entered (nsenter --net), so FUSE mounts made "in the guest" stay visible on the host.
#
# Login users (shared by all testbeds, created once): tether-tb, with a plain /bin/sh that prints nothing on
# startup, and tether-tb-chatty, whose bash prints a greeting from ~/.bashrc for every ssh command (as real users'
# rc files do) and, when $STATE/shell-greeting exists, that file too (sshd sets TETHER_TESTBED_STATE=$STATE); and,
# where fish is installed, tether-tb-fish, whose login shell is fish (no POSIX sh syntax for ssh commands).
#
# Usage: testbed.sh up NAME PORT | down NAME | status NAME | info NAME
#        testbed.sh stop-sshd NAME | start-sshd NAME | pause NAME | resume NAME
# State: ${TETHER_TESTBED_DIR:-/tmp/tether-testbed}/NAME
# `up` appends the lines of TETHER_TESTBED_SSHD_EXTRA (newline-separated) to the sshd_config; a keyword given there
# before any Match line replaces the default line with that keyword (e.g. `AllowStreamLocalForwarding no`).
set -euo pipefail

readonly LOGIN_USER=tether-tb
readonly CHATTY_USER=tether-tb-chatty
readonly FISH_USER=tether-tb-fish
readonly ROOT_DIR=${TETHER_TESTBED_DIR:-/tmp/tether-testbed}
readonly READY_TIMEOUT_S=${TETHER_TESTBED_READY_TIMEOUT:-30}
readonly SSHD_BIN=/usr/sbin/sshd
readonly GUEST_SSH_PORT=${TETHER_TESTBED_GUEST_SSH_PORT:-22}
readonly BRIDGE_PARTS=(bridge-guest bridge-host)

die() {
  echo "testbed: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 up NAME PORT | down NAME | status NAME | info NAME | stop-sshd NAME | start-sshd NAME | pause NAME | resume NAME"
}

# ---------------------------------------------------------------------------------------------------------------
# Process records: <state>/pids/<part> holds "pid starttime"; the start time guards against a recycled pid.

proc_starttime() { # pid → kernel start time (field 22 of /proc/pid/stat), or nothing when gone
  local stat rest
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  [[ $1 != Z && $1 != X ]] || return 1 # a zombie has already exited
  echo "${20}"
}

record_pid() { # part pid
  local start
  start=$(proc_starttime "$2") || die "$1 (pid $2) exited right after starting; see $STATE/$1.log"
  echo "$2 $start" >"$STATE/pids/$1"
}

recorded_pid() { # part → pid when that recorded process still runs
  local file=$STATE/pids/$1 pid start now
  [[ -f $file ]] || return 1
  read -r pid start <"$file" || return 1
  now=$(proc_starttime "$pid") || return 1
  [[ $now == "$start" ]] || return 1
  echo "$pid"
}

descendants() { # pid → the pid and all its descendants, parents first
  local root=$1
  local -A children=()
  local stat rest pid ppid
  for stat in /proc/[0-9]*/stat; do
    pid=${stat#/proc/}
    pid=${pid%/stat}
    read -r rest 2>/dev/null <"$stat" || continue
    rest=${rest##*) }
    # shellcheck disable=SC2086
    set -- $rest
    ppid=$2
    children[$ppid]+=" $pid"
  done
  local queue=("$root") out=() cur
  while ((${#queue[@]})); do
    cur=${queue[0]}
    queue=("${queue[@]:1}")
    out+=("$cur")
    # shellcheck disable=SC2206
    [[ -n ${children[$cur]:-} ]] && queue+=(${children[$cur]})
  done
  echo "${out[@]}"
}

alive() { proc_starttime "$1" >/dev/null 2>&1; }

stop_part() { # part: SIGTERM the recorded process and its descendants (sessions, forked relays), wait, then SIGKILL
  local pid tree p deadline
  if pid=$(recorded_pid "$1"); then
    tree=$(descendants "$pid")
    # shellcheck disable=SC2086
    kill -TERM $tree 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -CONT $tree 2>/dev/null || true # a paused bridge must see its SIGTERM
    deadline=$((SECONDS + 5))
    for p in $tree; do
      while alive "$p" && ((SECONDS < deadline)); do sleep 0.05; done
      if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    for p in $tree; do
      while alive "$p"; do sleep 0.05; done
    done
  fi
  rm -f "$STATE/pids/$1"
}

signal_part() { # part signal: signal the recorded process and its descendants
  local pid
  pid=$(recorded_pid "$1") || die "$1 of testbed $NAME is not running"
  # shellcheck disable=SC2046
  kill "-$2" $(descendants "$pid")
}

# ---------------------------------------------------------------------------------------------------------------
# Shared host setup (login user, fuse.conf, privilege separation dir), serialised across concurrent `up`s.

ensure_user() { # name shell
  if ! id -u "$1" >/dev/null 2>&1; then
    useradd --create-home --home-dir "/home/$1" --shell "$2" --user-group "$1"
    # sshd without PAM refuses accounts whose password starts with "!" (locked); "*" only disables passwords.
    usermod --password '*' "$1"
  fi
}

write_chatty_rc() { # rewritten on every up, so a changed greeting reaches hosts set up earlier
  local rc=/home/$CHATTY_USER/.bashrc
  cat >"$rc.tmp" <<'RC'
# Written by scripts/testbed.sh: this user's shell prints on startup, as rc files that greet or run tools do. bash
# reads ~/.bashrc for commands run by sshd too, so this reaches the stdout of every ssh command.
printf 'hello from ~/.bashrc\n'
printf 'a greeting without a newline'
if [ -n "${TETHER_TESTBED_STATE:-}" ] && [ -f "$TETHER_TESTBED_STATE/shell-greeting" ]; then
  cat "$TETHER_TESTBED_STATE/shell-greeting"
fi
RC
  chown "$CHATTY_USER:" "$rc.tmp"
  mv "$rc.tmp" "$rc"
}

setup_host() {
  mkdir -p "$ROOT_DIR" /run/sshd
  chmod 0755 "$ROOT_DIR"
  exec 9>"$ROOT_DIR/.setup.lock"
  flock 9
  ensure_user "$LOGIN_USER" /bin/sh
  ensure_user "$CHATTY_USER" /bin/bash
  if [[ -x /usr/bin/fish ]]; then
    ensure_user "$FISH_USER" /usr/bin/fish
  fi
  write_chatty_rc
  if ! grep -qx 'user_allow_other' /etc/fuse.conf 2>/dev/null; then
    echo 'user_allow_other' >>/etc/fuse.conf
  fi
  flock -u 9
  exec 9>&-
}

# ---------------------------------------------------------------------------------------------------------------
# Parts of one testbed.

ensure_netns() {
  if [[ ! -e $NETNS ]]; then
    ip netns add "tb-$NAME"
  fi
  ip -n "tb-$NAME" link set lo up
}

ensure_keys() {
  [[ -f $STATE/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C "tether-testbed-$NAME-host" -f "$STATE/ssh_host_ed25519_key"
  [[ -f $STATE/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C "tether-testbed-$NAME-client" -f "$STATE/id_ed25519"
  cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
  # sshd reads authorized_keys as the login user.
  chmod 0644 "$STATE/authorized_keys"
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")" >"$STATE/known_hosts"
}

ensure_guest_dir() {
  mkdir -p "$STATE/guest"
  chown "$LOGIN_USER:" "$STATE/guest"
  chmod 0755 "$STATE/guest"
  # Each testbed's login users get a home of their own (sshd sets HOME, see write_sshd_config): the guest agent
  # tether installs as a user without root, and what tether writes under ~, then belong to this testbed alone, as
  # they would to one VM. The chatty user's rc file comes along.
  local user
  for user in "$LOGIN_USER" "$CHATTY_USER" "$FISH_USER"; do
    id -u "$user" >/dev/null 2>&1 || continue
    mkdir -p "$STATE/home/$user"
    chown "$user:" "$STATE/home/$user"
    chmod 0755 "$STATE/home/$user"
  done
  cp -p "/home/$CHATTY_USER/.bashrc" "$STATE/home/$CHATTY_USER/.bashrc"
}

write_sshd_config() {
  local extra=${TETHER_TESTBED_SSHD_EXTRA:-} line key rest setenv=''
  local -A replaced=()
  # Keywords the extra lines set globally: sshd takes the first value it reads, so the default line must go.
  # Their SetEnv variables join the per-user ones below (a Match block's SetEnv replaces the global one).
  while IFS= read -r line; do
    read -r key rest <<<"$line" || true
    [[ ${key,,} == match ]] && break
    [[ -n $key && $key != \#* ]] && replaced[${key,,}]=1
    [[ ${key,,} == setenv ]] && setenv+=" ${rest%%#*}"
  done <<<"$extra"
  {
    while IFS= read -r line; do
      read -r key _ <<<"$line" || true
      [[ -n $key && -n ${replaced[${key,,}]:-} ]] || printf '%s\n' "$line"
    done <<EOF
# Generated by scripts/testbed.sh for testbed $NAME.
ListenAddress 127.0.0.1:$GUEST_SSH_PORT
ListenAddress [::1]:$GUEST_SSH_PORT
HostKey $STATE/ssh_host_ed25519_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
X11Forwarding no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
    [[ -z $extra ]] || printf '# From TETHER_TESTBED_SSHD_EXTRA.\n%s\n' "$extra"
    # Last, so that they stay apart from the lines above. TETHER_TESTBED_STATE is for the chatty login user's
    # ~/.bashrc: where a test can leave more for it to print. sshd takes the first SetEnv that applies: hence one per
    # user, each with both variables.
    local user
    for user in "$LOGIN_USER" "$CHATTY_USER" "$FISH_USER"; do
      printf 'Match User %s\n  SetEnv TETHER_TESTBED_STATE=%s HOME=%s%s\n' "$user" "$STATE" "$STATE/home/$user" "$setenv"
    done
    printf 'Match all\n  SetEnv TETHER_TESTBED_STATE=%s%s\n' "$STATE" "$setenv"
  } >"$STATE/sshd_config"
  "$SSHD_BIN" -t -f "$STATE/sshd_config" || die "sshd rejected $STATE/sshd_config"
}

# Starts a recorded part in the background, detached from our stdio so callers reading our output see EOF.
launch() { # part command...
  local part=$1
  shift
  setsid "$@" </dev/null >>"$STATE/$part.log" 2>&1 &
  record_pid "$part" "$!"
}

ensure_sshd() {
  recorded_pid sshd >/dev/null && return 0
  launch sshd nsenter "--net=$NETNS" "$SSHD_BIN" -D -f "$STATE/sshd_config" -E "$STATE/sshd.log"
}

ensure_bridge() {
  recorded_pid bridge-guest >/dev/null ||
    launch bridge-guest nsenter "--net=$NETNS" socat "UNIX-LISTEN:$STATE/bridge.sock,fork,unlink-early" "TCP:127.0.0.1:$GUEST_SSH_PORT,nodelay"
  recorded_pid bridge-host >/dev/null ||
    launch bridge-host socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" "UNIX-CONNECT:$STATE/bridge.sock"
}

ssh_ok() {
  timeout 10 ssh -p "$PORT" -i "$STATE/id_ed25519" -F none \
    -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 -o LogLevel=ERROR \
    -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$STATE/known_hosts" \
    "$LOGIN_USER@127.0.0.1" true </dev/null >/dev/null 2>>"$STATE/ready.log"
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT_S)) part
  until ssh_ok; do
    for part in sshd "${BRIDGE_PARTS[@]}"; do
      recorded_pid "$part" >/dev/null || die "$part of testbed $NAME exited; log: $(tail -n 5 "$STATE/$part.log" 2>/dev/null)"
    done
    ((SECONDS < deadline)) || die "ssh to $LOGIN_USER@127.0.0.1:$PORT not ready after ${READY_TIMEOUT_S}s; see $STATE/ready.log and $STATE/sshd.log"
    sleep 0.1
  done
}

json_str() { # escape for a JSON string (paths and names here hold no control characters)
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

print_info() {
  local fp
  fp=$(ssh-keygen -l -E sha256 -f "$STATE/ssh_host_ed25519_key.pub" | cut -d' ' -f2)
  printf '{"name":%s,"sshPort":%s,"user":%s,"identityFile":%s,"knownHostsFile":%s,"stateDir":%s,"netns":%s,"guestDir":%s,"hostKeyFingerprint":%s}\n' \
    "$(json_str "$NAME")" "$PORT" "$(json_str "$LOGIN_USER")" "$(json_str "$STATE/id_ed25519")" \
    "$(json_str "$STATE/known_hosts")" "$(json_str "$STATE")" "$(json_str "$NETNS")" "$(json_str "$STATE/guest")" \
    "$(json_str "$fp")"
}

unmount_fuse() { # lazily unmount every FUSE mount under the state dir, deepest first
  local mnt
  awk -v dir="$STATE/" '$3 ~ /^fuse/ && index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
    fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" || echo "testbed: could not unmount $mnt" >&2
  done
}

# ---------------------------------------------------------------------------------------------------------------
# Commands.

cmd_up() {
  [[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PORT must be 1-65535, got '$PORT'"
  [[ $GUEST_SSH_PORT =~ ^[0-9]+$ ]] && ((GUEST_SSH_PORT > 0 && GUEST_SSH_PORT < 65536)) ||
    die "TETHER_TESTBED_GUEST_SSH_PORT must be 1-65535, got '$GUEST_SSH_PORT'"
  if [[ -f $STATE/port && $(<"$STATE/port") != "$PORT" ]] && recorded_pid bridge-host >/dev/null; then
    die "testbed $NAME already runs on port $(<"$STATE/port"); run '$0 down $NAME' first"
  fi
  setup_host
  mkdir -p "$STATE/pids"
  chmod 0755 "$STATE"
  echo "$PORT" >"$STATE/port"
  ensure_netns
  ensure_keys
  ensure_guest_dir
  write_sshd_config
  ensure_sshd
  ensure_bridge
  wait_ready
  print_info
}

cmd_down() {
  if [[ -d $STATE ]]; then
    stop_part bridge-host
    stop_part bridge-guest
    stop_part sshd
    unmount_fuse
  fi
  if [[ -e $NETNS ]]; then
    local left
    left=$(ip netns pids "tb-$NAME" 2>/dev/null | tr '\n' ' ')
    [[ -z $left ]] || echo "testbed: processes not started by testbed.sh still run in tb-$NAME: $left" >&2
    ip netns del "tb-$NAME"
  fi
  rm -rf "$STATE"
}

cmd_status() {
  local part pid all=0
  if [[ -e $NETNS ]]; then echo "netns tb-$NAME: present"; else echo "netns tb-$NAME: absent" && all=1; fi
  for part in sshd "${BRIDGE_PARTS[@]}"; do
    if pid=$(recorded_pid "$part"); then echo "$part: running (pid $pid)"; else echo "$part: stopped" && all=1; fi
  done
  if [[ -f $STATE/port ]]; then
    PORT=$(<"$STATE/port")
    if ssh_ok; then echo "ssh $LOGIN_USER@127.0.0.1:$PORT: ok"; else echo "ssh $LOGIN_USER@127.0.0.1:$PORT: failing" && all=1; fi
  fi
  return $all
}

load_port() {
  [[ -f $STATE/port ]] || die "testbed $NAME is not up (no $STATE/port)"
  PORT=$(<"$STATE/port")
}

CMD=${1:-}
NAME=${2:-}
PORT=${3:-}
[[ -n $CMD && -n $NAME ]] || usage
[[ $NAME =~ ^[A-Za-z0-9_-]{1,40}$ ]] || die "NAME must match [A-Za-z0-9_-]{1,40}, got '$NAME'"
readonly STATE=$ROOT_DIR/$NAME
readonly NETNS=/run/netns/tb-$NAME

case $CMD in
up) [[ -n $PORT ]] || usage && cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
info) load_port && print_info ;;
stop-sshd) stop_part sshd ;;
start-sshd) load_port && ensure_netns && ensure_sshd && wait_ready ;;
pause) for p in "${BRIDGE_PARTS[@]}"; do signal_part "$p" STOP; done ;;
resume) for p in "${BRIDGE_PARTS[@]}"; do signal_part "$p" CONT; done ;;
*) usage ;;
esac
