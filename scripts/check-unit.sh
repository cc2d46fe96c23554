#!/usr/bin/env bash
# Checks scripts/wrenmq.service with `systemd-analyze verify` and scripts/install.sh with
# DESTDIR. Skips the verify step (with a message) where systemd-analyze is missing.
#
#   scripts/check-unit.sh [BINARY]    # BINARY defaults to target/debug/wrenmq
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary=$(realpath "${1:-target/debug/wrenmq}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

DESTDIR="$tmp/root" scripts/install.sh "$binary" >/dev/null
for f in usr/local/bin/wrenmq etc/systemd/system/wrenmq.service etc/wrenmq/wrenmq.conf; do
  [ -f "$tmp/root/$f" ] || { echo "check-unit: install.sh did not install /$f" >&2; exit 1; }
done
echo "check-unit: install.sh (DESTDIR) installs binary, unit and config"

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
