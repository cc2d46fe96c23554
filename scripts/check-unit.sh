#!/usr/bin/env bash
# Checks scripts/wrenmq.service with `systemd-analyze verify` and scripts/install.sh with
# DESTDIR. Skips the verify step (with a message) where systemd-analyze is missing.
# As root, also checks that the service user can read the password file as installed
# (root:GROUP 0640), also after 'wrenmq passwd' edits it, by starting the broker as an
# unprivileged user of that group (nobody stands in for wrenmq).
#
#   scripts/check-unit.sh [BINARY]    # BINARY defaults to target/debug/wrenmq
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary=$(realpath "${1:-target/debug/wrenmq}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

DESTDIR="$tmp/root" scripts/install.sh "$binary" >/dev/null
for f in usr/local/bin/wrenmq etc/systemd/system/wrenmq.service etc/wrenmq/wrenmq.conf etc/wrenmq/passwd; do
  [ -f "$tmp/root/$f" ] || { echo "check-unit: install.sh did not install /$f" >&2; exit 1; }
done
mode=$(stat -c %a "$tmp/root/etc/wrenmq/passwd")
[ "$mode" = 640 ] || { echo "check-unit: /etc/wrenmq/passwd is $mode, not 640" >&2; exit 1; }
echo "check-unit: install.sh (DESTDIR) installs binary, unit, config and a 0640 password file"

# install.sh picks the build for the CPU (an ARMv7 binary on a Pi Zero dies with SIGILL)
# and refuses a CPU it has no build for. Whether or not the build exists, its path is named.
for pick in armv6l:arm-unknown-linux-gnueabi armv7l:armv7-unknown-linux-gnueabihf \
  aarch64:aarch64-unknown-linux-musl; do
  out=$(WRENMQ_INSTALL_MACHINE=${pick%%:*} DESTDIR="$tmp/pick" scripts/install.sh 2>&1 || true)
  grep -q "target/${pick#*:}/release/wrenmq" <<<"$out" \
    || { echo "$out" >&2; echo "check-unit: install.sh on ${pick%%:*} did not pick ${pick#*:}" >&2; exit 1; }
done
if out=$(WRENMQ_INSTALL_MACHINE=mips DESTDIR="$tmp/pick" scripts/install.sh 2>&1) \
  || ! grep -q 'no wrenmq build for this CPU (mips)' <<<"$out"; then
  echo "$out" >&2
  echo "check-unit: install.sh did not refuse an unknown CPU" >&2
  exit 1
fi
echo "check-unit: install.sh picks the ARMv6/ARMv7/aarch64 build by CPU and refuses others"

# A DynamicUser= cannot be in the password file's group: the unit must name the user.
unit=scripts/wrenmq.service
if grep -qE '^DynamicUser=(yes|true|1)' "$unit" || ! grep -qx 'User=wrenmq' "$unit" \
  || ! grep -qx 'Group=wrenmq' "$unit"; then
  echo "check-unit: $unit must run as User=wrenmq Group=wrenmq, without DynamicUser=" >&2
  exit 1
fi

# The service user reads the installed password file (as root:wrenmq 0640), before and
# after 'wrenmq passwd' changes it; the old layout (root:root 0600) is refused.
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1 && getent passwd nobody >/dev/null; then
  chmod 0755 "$tmp"
  group=$(id -gn nobody)
  pw="$tmp/root/etc/wrenmq/passwd"
  chgrp "$group" "$pw"          # what install.sh does with the wrenmq group
  "$binary" passwd -b "$pw" alice secret
  [ "$(stat -c '%U:%G %a' "$pw")" = "root:$group 640" ] \
    || { echo "check-unit: wrenmq passwd changed the file to $(stat -c '%U:%G %a' "$pw")" >&2; exit 1; }
  run_as_service_user() { # password file -> the broker's output
    printf 'password_file %s\npersistence false\n' "$1" >"$tmp/svc.conf"
    chmod 0644 "$tmp/svc.conf"
    timeout 3 setpriv --reuid=nobody --regid="$group" --init-groups \
      "$binary" -c "$tmp/svc.conf" -l 127.0.0.1:0 2>&1 || true
  }
  out=$(run_as_service_user "$pw")
  if ! grep -q 'started' <<<"$out"; then
    echo "$out" >&2
    echo "check-unit: the service user cannot start with the installed password file" >&2
    exit 1
  fi
  cp "$pw" "$tmp/passwd-0600" && chmod 0600 "$tmp/passwd-0600" && chown root:root "$tmp/passwd-0600"
  out=$(run_as_service_user "$tmp/passwd-0600")
  if grep -q 'started' <<<"$out"; then
    echo "check-unit: a root-only password file was readable: the check proves nothing" >&2
    exit 1
  fi
  echo "check-unit: the service user reads the root:$group 0640 password file (and not a root 0600 one)"
else
  echo "check-unit: SKIPPED password file access check: needs root, setpriv and user nobody"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-unit: SKIPPED systemd-analyze verify: systemd-analyze not installed"
  exit 0
fi
# verify insists that ExecStart exists; point it at the binary just installed under
# DESTDIR and change nothing else.
mkdir -p "$tmp/unit"
sed "s|/usr/local/bin/wrenmq|$tmp/root/usr/local/bin/wrenmq|" scripts/wrenmq.service \
  >"$tmp/unit/wrenmq.service"
if ! out=$(systemd-analyze verify "$tmp/unit/wrenmq.service" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  echo "check-unit: systemd-analyze verify failed" >&2
  exit 1
fi
echo "check-unit: systemd-analyze verify: wrenmq.service OK"
