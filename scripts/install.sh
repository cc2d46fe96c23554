#!/usr/bin/env bash
# Installs wrenmq on a board (run as root there):
#
#   sudo scripts/install.sh [BINARY]
#
# On Debian or Raspberry Pi OS prefer the package (scripts/package-deb.sh, then dpkg -i);
# this script is for other systems and for hand-built binaries.
#
# BINARY defaults to the cross build for this machine's CPU (`uname -m`):
#   aarch64, arm64   target/aarch64-unknown-linux-musl/release/wrenmq
#   armv7l, armv8l   target/armv7-unknown-linux-gnueabihf/release/wrenmq
#   armv6l           target/arm-unknown-linux-gnueabi/release/wrenmq   (ARMv6 build)
#   x86_64           target/x86_64-unknown-linux-musl/release/wrenmq, else target/release/wrenmq
# and refuses any other CPU (an ARMv7 binary on a Pi Zero dies with an illegal
# instruction; say BINARY explicitly if you know better).
# It installs:
#   /usr/local/bin/wrenmq                   the binary
#   /etc/systemd/system/wrenmq.service      the unit (scripts/wrenmq.service)
#   /etc/wrenmq/wrenmq.conf                 the default configuration, unless one exists
#   /etc/wrenmq/passwd                      an empty password file, root:wrenmq 0640,
#                                           unless one exists (then it is made so)
# creates the system user and group `wrenmq` the unit runs as (unless they exist), then
# reloads systemd and enables and (re)starts the service.
#
# DESTDIR=/some/dir installs under that directory instead, creates no user and touches
# no service (for packaging and for the CI check of this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.."
dest=${DESTDIR:-}

binary=${1:-}
if [ -z "$binary" ]; then
  machine=${WRENMQ_INSTALL_MACHINE:-$(uname -m)}   # override: tests only
  case "$machine" in
    aarch64 | arm64) candidates=(target/aarch64-unknown-linux-musl/release/wrenmq) ;;
    armv7l | armv8l) candidates=(target/armv7-unknown-linux-gnueabihf/release/wrenmq) ;;
    armv6l) candidates=(target/arm-unknown-linux-gnueabi/release/wrenmq) ;;
    x86_64 | amd64) candidates=(target/x86_64-unknown-linux-musl/release/wrenmq target/release/wrenmq) ;;
    *)
      echo "install.sh: no wrenmq build for this CPU ($machine): builds exist for aarch64, armv7l, armv6l and x86_64" >&2
      exit 1
      ;;
  esac
  binary="$root/${candidates[0]}"
  for c in "${candidates[@]}"; do
    if [ -x "$root/$c" ]; then binary="$root/$c"; break; fi
  done
fi
[ -f "$binary" ] || { echo "install.sh: no binary at $binary (build one with scripts/cross-build.sh)" >&2; exit 1; }

if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or set DESTDIR)" >&2
  exit 1
fi

# The service user: a system account without a login or home of its own.
if [ -z "$dest" ] && ! getent passwd wrenmq >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/wrenmq \
    --shell /usr/sbin/nologin wrenmq
  echo "install.sh: created system user wrenmq"
fi

echo "install.sh: installing $binary"
install -d "$dest/usr/local/bin" "$dest/etc/systemd/system" "$dest/etc/wrenmq"
install -m 0755 "$binary" "$dest/usr/local/bin/wrenmq"
install -m 0644 "$here/wrenmq.service" "$dest/etc/systemd/system/wrenmq.service"
if [ -e "$dest/etc/wrenmq/wrenmq.conf" ]; then
  echo "install.sh: keeping the existing /etc/wrenmq/wrenmq.conf"
else
  install -m 0644 "$here/wrenmq-default.conf" "$dest/etc/wrenmq/wrenmq.conf"
fi
# The password file: readable by the service's group, by no one else. 'wrenmq passwd'
# keeps this owner, group and mode when it adds or changes users.
passwd_file="$dest/etc/wrenmq/passwd"
if [ ! -e "$passwd_file" ]; then
  install -m 0640 /dev/null "$passwd_file"
fi
if [ -z "$dest" ]; then
  chown root:wrenmq "$passwd_file"
  chmod 0640 "$passwd_file"
fi
echo "install.sh: installed $("$dest/usr/local/bin/wrenmq" --version 2>/dev/null || echo wrenmq) to ${dest:-/}"

if [ -n "$dest" ]; then
  exit 0
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable wrenmq.service
  systemctl restart wrenmq.service
  # Type=notify: restart returns once the broker sent READY=1 (or failed).
  systemctl --no-pager status wrenmq.service || true
else
  echo "install.sh: systemd is not running here; start /usr/local/bin/wrenmq -c /etc/wrenmq/wrenmq.conf yourself"
fi
