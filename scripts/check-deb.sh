#!/usr/bin/env bash
# Checks the amd64 Debian package (scripts/package-deb.sh) the way .ci/run needs it,
# without touching the system: everything happens in a scratch dpkg root under target/.
#
#   scripts/check-deb.sh            # builds target/debian/wrenmq_<v>_amd64.deb, then:
#
#   1. contents: dpkg-deb -c lists the binary, the unit, the config, the docs; the
#      config is the one conffile; the unit starts /usr/bin/wrenmq;
#   2. lintian (installed when missing; SKIPPED if it cannot be): no error or warning;
#   3. the packaged binary runs (--version);
#   4. upgrade: version N is installed into a scratch root (dpkg --root
#      --force-script-chrootless: the maintainer scripts run with DPKG_ROOT set and touch
#      only that root), the installed binary runs on the installed config (on a loopback
#      port and with the scratch root's /var/lib/wrenmq), a persistent client subscribes
#      and goes offline, three QoS 1 messages are queued for it, the broker stops; the
#      conffile is edited; N+1 (same build, DEB_VERSION=<v>+upgradetest) is installed
#      over it; the edit survives, the broker starts again from the new package and the
#      client gets its three messages;
#   5. remove keeps config and data, purge deletes them;
#   6. scripts/check-deb-scripts.sh: the maintainer scripts as if systemd ran.
#
#   scripts/check-deb.sh --arm      # after scripts/cross-build.sh: packages arm64, armhf
#                                   # and armel from those builds, checks their contents,
#                                   # lintian, and which binary armhf's /usr/bin/wrenmq runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "check-deb: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)

lint() { # DEB...: no lintian error or warning (skipped when lintian cannot be installed)
  if ! command -v lintian >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian \
      >/dev/null 2>&1 || true
  fi
  if command -v lintian >/dev/null 2>&1; then
    local out code=0
    out=$(lintian --fail-on error,warning "$@" 2>&1) || code=$?
    grep -v 'running with root privileges' <<<"$out" || true
    [ "$code" -eq 0 ] || fail "lintian: errors or warnings in $*"
    echo "check-deb: lintian $*: no errors or warnings"
  else
    echo "check-deb: SKIPPED lintian: cannot be installed"
  fi
}

if [ "${1:-}" = --arm ]; then
  tmp=$(mktemp -d "$PWD/target/check-deb.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  for arch in arm64 armhf armel; do
    WRENMQ_DEB_NO_BUILD=1 scripts/package-deb.sh "$arch"
    deb="target/debian/wrenmq_${version}_${arch}.deb"
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb: wrong Architecture"
    dpkg-deb -c "$deb" >"$tmp/contents"
    grep -q ' ./usr/bin/wrenmq$' "$tmp/contents" || fail "$deb lacks /usr/bin/wrenmq"
  done
  lint target/debian/wrenmq_"${version}"_{arm64,armhf,armel}.deb
  # armhf: /usr/bin/wrenmq runs the ARMv6 build on armv6l and the ARMv7 one elsewhere.
  # A fake uname says which CPU; exec fails here (no /usr/libexec/wrenmq on this
  # machine), and its error names the binary chosen.
  dpkg-deb -x "target/debian/wrenmq_${version}_armhf.deb" "$tmp/x"
  dpkg-deb -c "target/debian/wrenmq_${version}_armel.deb" >"$tmp/contents"
  ! grep -q ' ./usr/libexec' "$tmp/contents" || fail "armel carries the armhf layout"
  dpkg-deb -I "target/debian/wrenmq_${version}_armel.deb" preinst >/dev/null \
    || fail "armel has no preinst refusing ARMv5"
  mkdir -p "$tmp/bin"
  for pick in armv6l:wrenmq-armv6 armv7l:wrenmq-armv7 aarch64:wrenmq-armv7; do
    printf '#!/bin/sh\necho %s\n' "${pick%%:*}" >"$tmp/bin/uname"
    chmod +x "$tmp/bin/uname"
    out=$(PATH="$tmp/bin:$PATH" sh "$tmp/x/usr/bin/wrenmq" --version 2>&1 || true)
    grep -q "/usr/libexec/wrenmq/${pick#*:}" <<<"$out" \
      || { echo "$out" >&2; fail "armhf /usr/bin/wrenmq on ${pick%%:*} does not run ${pick#*:}"; }
  done
  # The ARMv6 build is the one scripts/cross-build.sh made for arm-unknown-linux-gnueabi
  # (soft-float; its CPU is checked under qemu -cpu arm1176 by scripts/qemu-smoke.sh).
  cmp -s "$tmp/x/usr/libexec/wrenmq/wrenmq-armv6" target/arm-unknown-linux-gnueabi/release/wrenmq \
    || fail "armhf's wrenmq-armv6 is not the arm-unknown-linux-gnueabi build"
  ! readelf -A "$tmp/x/usr/libexec/wrenmq/wrenmq-armv6" | grep -q 'Tag_ABI_VFP_args: VFP registers' \
    || fail "armhf's wrenmq-armv6 is a hard-float (ARMv7) binary"
  echo "check-deb: armhf runs the ARMv6 build on armv6l, the ARMv7 build on armv7l/aarch64"
  ls -l target/debian/*.deb
  exit 0
fi
next="$version+upgradetest"
scripts/package-deb.sh amd64
WRENMQ_DEB_NO_BUILD=1 DEB_VERSION="$next" scripts/package-deb.sh amd64 >/dev/null
deb="target/debian/wrenmq_${version}_amd64.deb"
deb_next="target/debian/wrenmq_${next}_amd64.deb"

tmp=$(mktemp -d "$PWD/target/check-deb.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- 1. contents
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' >"$tmp/contents"
for f in ./usr/bin/wrenmq ./lib/systemd/system/wrenmq.service ./etc/wrenmq/wrenmq.conf \
  ./usr/share/doc/wrenmq/copyright ./usr/share/doc/wrenmq/changelog.gz; do
  grep -q " root/root $f\$" "$tmp/contents" || fail "$deb lacks $f (root-owned)"
done
grep -q '^-rwxr-xr-x root/root ./usr/bin/wrenmq$' "$tmp/contents" || fail "/usr/bin/wrenmq is not 0755"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "Architecture is not amd64"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/wrenmq/wrenmq.conf ] \
  || fail "conffiles is not exactly /etc/wrenmq/wrenmq.conf"
dpkg-deb -x "$deb" "$tmp/x"
grep -q '^ExecStart=/usr/bin/wrenmq -c /etc/wrenmq/wrenmq.conf$' "$tmp/x/lib/systemd/system/wrenmq.service" \
  || fail "the unit does not start /usr/bin/wrenmq"
file -b "$tmp/x/usr/bin/wrenmq" | grep -q 'static' || fail "/usr/bin/wrenmq is not static"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify insists that ExecStart exists: point it at the extracted binary.
  mkdir -p "$tmp/unit"
  sed "s|/usr/bin/wrenmq|$tmp/x/usr/bin/wrenmq|" "$tmp/x/lib/systemd/system/wrenmq.service" \
    >"$tmp/unit/wrenmq.service"
  if ! out=$(systemd-analyze verify "$tmp/unit/wrenmq.service" 2>&1) || [ -n "$out" ]; then
    echo "$out" >&2
    fail "systemd-analyze verify: the packaged unit"
  fi
fi
echo "check-deb: contents, permissions, conffiles and unit (systemd-analyze verify where available) OK ($(stat -c %s "$deb") bytes)"

# ---- 2. lintian
lint "$deb"

# ---- 3. the binary runs
"$tmp/x/usr/bin/wrenmq" --version | grep -qx "wrenmq $version" || fail "the packaged binary does not run"
echo "check-deb: packaged binary runs: $("$tmp/x/usr/bin/wrenmq" --version)"

# ---- 4. install N, queue messages, upgrade to N+1, messages delivered
root="$tmp/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkg_root() {
  # --force-script-chrootless: the scripts run here with DPKG_ROOT=$root (they honour it);
  # --force-depends: the scratch root has no adduser (the scripts skip it under DPKG_ROOT).
  dpkg --root="$root" --log=/dev/null --force-script-chrootless --force-depends \
    --force-not-root "$@" 2>&1 | grep -v 'dependency problems\|depends on adduser\|Package adduser is not installed' || true
}
installed_version() { dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status} ${Version}' wrenmq 2>/dev/null || true; }

dpkg_root -i "$deb"
[ "$(installed_version)" = "install ok installed $version" ] || fail "N not installed: $(installed_version)"
[ -d "$root/var/lib/wrenmq" ] || fail "postinst did not create /var/lib/wrenmq"
[ "$(stat -c %a "$root/etc/wrenmq/passwd")" = 640 ] || fail "postinst did not create a 0640 /etc/wrenmq/passwd"
echo "check-deb: $version installed into the scratch root"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
broker=
start_broker() {
  # The installed config, with the listener moved to a loopback test port and the data
  # directory into the scratch root.
  "$root/usr/bin/wrenmq" -c "$root/etc/wrenmq/wrenmq.conf" -l "127.0.0.1:$port" \
    --data-dir "$root/var/lib/wrenmq" >>"$tmp/broker.log" 2>&1 &
  broker=$!
  pids+=("$broker")
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$broker" 2>/dev/null || break
    sleep 0.1
  done
  cat "$tmp/broker.log" >&2
  fail "the installed broker did not start"
}
stop_broker() {
  kill -TERM "$broker"
  local code=0
  wait "$broker" || code=$?
  [ "$code" -eq 0 ] || { cat "$tmp/broker.log" >&2; fail "broker exit code $code after SIGTERM"; }
}

start_broker
# A persistent session (clean session 0) with a QoS 1 subscription, then offline.
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -i upgrade-sub -c -q 1 -t 'upgrade/#' -E
for i in 1 2 3; do
  timeout 10 mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "upgrade/$i" -m "queued before upgrade $i"
done
stop_broker

echo "# edited by the admin" >>"$root/etc/wrenmq/wrenmq.conf"
dpkg_root -i "$deb_next"
[ "$(installed_version)" = "install ok installed $next" ] || fail "N+1 not installed: $(installed_version)"
tail -n1 "$root/etc/wrenmq/wrenmq.conf" | grep -qx '# edited by the admin' \
  || fail "the upgrade replaced the edited conffile"
echo "check-deb: upgraded to $next; the edited conffile was kept"

start_broker
got=$(timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -i upgrade-sub -c -q 1 -t 'upgrade/#' -C 3 -W 15 || true)
expected=$(printf 'queued before upgrade %s\n' 1 2 3)
if [ "$got" != "$expected" ]; then
  cat "$tmp/broker.log" >&2
  fail "after the upgrade the offline client got '$got', not its three queued messages"
fi
stop_broker
echo "check-deb: the three messages queued before the upgrade were delivered after it"

# ---- 5. remove keeps config and data; purge deletes them
dpkg_root --remove wrenmq
[ ! -e "$root/usr/bin/wrenmq" ] || fail "remove left /usr/bin/wrenmq"
[ -f "$root/etc/wrenmq/wrenmq.conf" ] && [ -d "$root/var/lib/wrenmq" ] && [ -f "$root/etc/wrenmq/passwd" ] \
  || fail "remove deleted configuration or data"
dpkg_root --purge wrenmq
[ ! -e "$root/var/lib/wrenmq" ] && [ ! -e "$root/etc/wrenmq" ] || fail "purge left configuration or data"
echo "check-deb: remove keeps configuration and data; purge deletes them"

# ---- 6. the maintainer scripts where systemd runs (enable/start, busy port, upgrade, purge)
scripts/check-deb-scripts.sh
