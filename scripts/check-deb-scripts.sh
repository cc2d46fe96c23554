#!/usr/bin/env bash
# Runs the package's maintainer scripts (scripts/debian/) as on a system where systemd
# runs, without changing this one: in a private mount namespace (unshare -m) /run is a
# tmpfs with /run/systemd/system in it, /etc is an overlay and /var/lib a tmpfs, and
# adduser, chown, systemctl, deb-systemd-helper and deb-systemd-invoke are stubs that
# log their arguments. Checks:
#   - first install, port free: user created, unit enabled and started;
#   - first install, the configured port taken (as by Mosquitto): enabled, NOT started,
#     and the message says `systemctl disable --now mosquitto`;
#   - a unit left by scripts/install.sh in /etc/systemd/system: a warning;
#   - upgrade with the service running: restarted, no port check (it holds its own port);
#   - remove: stopped, configuration and data kept; purge: both deleted.
# Needs root and unshare; SKIPPED (exit 0) otherwise.
#
#   scripts/check-deb-scripts.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != --inside ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null 2>&1; then
    echo "check-deb-scripts: SKIPPED: needs root and unshare"
    exit 0
  fi
  mkdir -p target
  tmp=$(mktemp -d "$PWD/target/check-deb-scripts.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  code=0
  unshare -m --propagation private "$0" --inside "$tmp" || code=$?
  exit "$code"
fi

tmp=$2
fail() { echo "check-deb-scripts: $*" >&2; [ ! -f "$tmp/log" ] || cat "$tmp/log" >&2; exit 1; }

mkdir -p "$tmp/up" "$tmp/work" "$tmp/stubs"
mount -t tmpfs none /run
mkdir -p /run/systemd/system
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$tmp/up,workdir=$tmp/work" /etc
mount -t tmpfs none /var/lib

# Stubs: log the call; systemctl answers is-active/is-enabled from files.
for cmd in adduser chown deb-systemd-helper deb-systemd-invoke systemctl; do
  cat >"$tmp/stubs/$cmd" <<EOF
#!/bin/sh
echo "$cmd \$*" >>"$tmp/log"
case "$cmd \$*" in
  *"is-active"*) [ -e "$tmp/active" ] ;;
  *"is-enabled"*) true ;;
  *"was-enabled"*) true ;;
  *) true ;;
esac
EOF
  chmod +x "$tmp/stubs/$cmd"
done
export PATH="$tmp/stubs:$PATH"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p /etc/wrenmq
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >/etc/wrenmq/wrenmq.conf
run() { # SCRIPT ARGS... -> its stdout+stderr in $tmp/out, calls in $tmp/log
  : >"$tmp/log"
  sh "scripts/debian/$1" "${@:2}" >"$tmp/out" 2>&1 || fail "$1 $* failed: $(cat "$tmp/out")"
}
called() { grep -qx "$1" "$tmp/log" || fail "expected call '$1'"; }
not_called() { ! grep -q "$1" "$tmp/log" || fail "unexpected call matching '$1'"; }

# First install, port free.
run postinst configure
called "adduser --system --group --quiet --home /var/lib/wrenmq --no-create-home --shell /usr/sbin/nologin wrenmq"
called "deb-systemd-helper enable wrenmq.service"
called "deb-systemd-invoke start wrenmq.service"
[ -d /var/lib/wrenmq ] && [ "$(stat -c %a /etc/wrenmq/passwd)" = 640 ] || fail "no data directory or password file"
echo "check-deb-scripts: first install: user created, unit enabled and started"

# First install, the port taken (by "Mosquitto").
: >"$tmp/holder"
python3 -c "
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(); print('up', flush=True); time.sleep(30)" >"$tmp/holder" &
holder=$!
for _ in $(seq 50); do grep -q up "$tmp/holder" && break; sleep 0.1; done
grep -q up "$tmp/holder" || fail "could not occupy port $port"
run postinst configure
kill "$holder" 2>/dev/null || true
called "deb-systemd-helper enable wrenmq.service"
not_called "deb-systemd-invoke start"
grep -q "NOT started: TCP port(s) $port already in use" "$tmp/out" || fail "no port message: $(cat "$tmp/out")"
grep -q 'systemctl disable --now mosquitto' "$tmp/out" || fail "the message does not say how to switch"
echo "check-deb-scripts: port $port taken: enabled, not started, told to disable Mosquitto"

# A unit left by scripts/install.sh overrides the package's: say so.
mkdir -p /etc/systemd/system
touch /etc/systemd/system/wrenmq.service
run postinst configure
grep -q 'overrides the packaged unit' "$tmp/out" || fail "no warning about install.sh's unit: $(cat "$tmp/out")"
rm /etc/systemd/system/wrenmq.service
run postinst configure
! grep -q 'overrides the packaged unit' "$tmp/out" || fail "a warning about a unit that is not there"
echo "check-deb-scripts: warns when install.sh's unit in /etc/systemd/system overrides the package's"

# Upgrade with the service running: restart it.
touch "$tmp/active"
run postinst configure 0.0.9
called "deb-systemd-invoke restart wrenmq.service"
not_called "deb-systemd-invoke start"
rm "$tmp/active"
run prerm upgrade 0.1.1
not_called "deb-systemd-invoke stop"
echo "check-deb-scripts: upgrade: running service restarted, not stopped by prerm"

# Remove: stop, keep config and data. Purge: delete them.
echo data >/var/lib/wrenmq/state
run prerm remove
called "deb-systemd-invoke stop wrenmq.service"
run postrm remove
called "deb-systemd-helper mask wrenmq.service"
[ -f /var/lib/wrenmq/state ] && [ -f /etc/wrenmq/passwd ] || fail "remove deleted data or passwords"
rm -f /etc/wrenmq/wrenmq.conf # dpkg deletes the conffile on purge before postrm
run postrm purge
called "deb-systemd-helper purge wrenmq.service"
[ ! -e /var/lib/wrenmq ] && [ ! -e /etc/wrenmq ] || fail "purge left data or configuration"
echo "check-deb-scripts: remove stops and keeps data; purge deletes it"
