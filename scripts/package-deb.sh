#!/usr/bin/env bash
# Builds the Debian package of wrenmq for one architecture with plain dpkg-deb:
#
#   scripts/package-deb.sh ARCH      # ARCH: amd64, arm64, armhf, armel (armv6 = armhf)
#   -> target/debian/wrenmq_<version>_<arch>.deb
#
#   arch    binary (static)                      runs on
#   amd64   x86_64-unknown-linux-musl            x86-64 Debian/Ubuntu
#   arm64   aarch64-unknown-linux-musl           64-bit Pi OS (Pi 3, 4, 5, Zero 2 W)
#   armhf   armv7-unknown-linux-gnueabihf AND    32-bit Pi OS on every Pi, Debian armhf;
#           arm-unknown-linux-gnueabi (ARMv6)    /usr/bin/wrenmq picks by CPU (see below)
#   armel   arm-unknown-linux-gnueabi (ARMv6)    Debian armel on ARMv6 (preinst refuses v4/v5)
#
# Why armhf carries two builds: "armv6" is not a Debian architecture. Raspberry Pi OS calls
# its 32-bit userland armhf on every Pi, Pi Zero and Pi 1 (ARMv6) included, while Debian's
# armhf means ARMv7. An ARMv7 binary dies with SIGILL on a Pi Zero; an ARMv6 one runs
# everywhere but uses CP15 barriers that 64-bit kernels (32-bit Pi OS on a Pi 4/5) trap or
# refuse. So the armhf package ships both under /usr/libexec/wrenmq/ and a 10-line
# /usr/bin/wrenmq that execs the right one for `uname -m` (armv6l -> ARMv6).
#
# The binaries come from scripts/cross-build.sh (run for the needed targets unless
# WRENMQ_DEB_NO_BUILD=1). No network is needed to package. DEB_VERSION overrides the
# package version (default: Cargo.toml's), e.g. to build an N+1 for the upgrade test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

arch=${1:-}
case "$arch" in
  amd64) targets=(x86_64-unknown-linux-musl) ;;
  arm64) targets=(aarch64-unknown-linux-musl) ;;
  armv6)
    echo "package-deb: armv6 is not a Debian architecture; building armhf, which carries the ARMv6 build (Raspberry Pi OS on Pi Zero / Pi 1 is armhf)" >&2
    arch=armhf
    targets=(armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabi)
    ;;
  armhf) targets=(armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabi) ;;
  armel) targets=(arm-unknown-linux-gnueabi) ;;
  *)
    echo "usage: scripts/package-deb.sh amd64|arm64|armhf|armel" >&2
    exit 2
    ;;
esac

crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
version=${DEB_VERSION:-$crate_version}
[ -n "$version" ] || { echo "package-deb: no version in Cargo.toml" >&2; exit 1; }

if [ -z "${WRENMQ_DEB_NO_BUILD:-}" ]; then
  scripts/cross-build.sh "${targets[@]}"
fi
for t in "${targets[@]}"; do
  [ -x "target/$t/release/wrenmq" ] || { echo "package-deb: target/$t/release/wrenmq missing" >&2; exit 1; }
done

out=target/debian
stage="$out/wrenmq_${version}_${arch}"
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/wrenmq" \
  "$stage/usr/share/doc/wrenmq" "$stage/usr/share/lintian/overrides"

# ---- binaries
case "$arch" in
  armhf)
    install -d "$stage/usr/libexec/wrenmq"
    install -m 0755 target/armv7-unknown-linux-gnueabihf/release/wrenmq "$stage/usr/libexec/wrenmq/wrenmq-armv7"
    install -m 0755 target/arm-unknown-linux-gnueabi/release/wrenmq "$stage/usr/libexec/wrenmq/wrenmq-armv6"
    install -m 0755 scripts/debian/wrenmq-armhf.sh "$stage/usr/bin/wrenmq"
    ;;
  *) install -m 0755 "target/${targets[0]}/release/wrenmq" "$stage/usr/bin/wrenmq" ;;
esac

# ---- the unit: scripts/wrenmq.service with the packaged binary path
sed -e 's|/usr/local/bin/wrenmq|/usr/bin/wrenmq|g' \
  -e 's|^# wrenmq as a systemd service; scripts/install.sh puts it in /etc/systemd/system/\.|# wrenmq as a systemd service (Debian package: /lib/systemd/system/wrenmq.service).|' \
  -e 's|The unprivileged system user scripts/install.sh creates|The unprivileged system user the package postinst creates|' \
  scripts/wrenmq.service >"$stage/lib/systemd/system/wrenmq.service"
chmod 0644 "$stage/lib/systemd/system/wrenmq.service"
grep -q '^ExecStart=/usr/bin/wrenmq ' "$stage/lib/systemd/system/wrenmq.service" \
  || { echo "package-deb: the unit's ExecStart was not adapted" >&2; exit 1; }

# ---- configuration (a conffile) and documentation
install -m 0644 scripts/wrenmq-default.conf "$stage/etc/wrenmq/wrenmq.conf"
echo /etc/wrenmq/wrenmq.conf >"$stage/DEBIAN/conffiles"
install -m 0644 scripts/debian/copyright "$stage/usr/share/doc/wrenmq/copyright"
install -m 0644 scripts/debian/README.Debian "$stage/usr/share/doc/wrenmq/README.Debian"
# A native package's changelog; the date is the commit's, so rebuilds are identical.
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
printf '%s\n' \
  "wrenmq ($version) stable; urgency=medium" "" \
  "  * wrenmq $crate_version, packaged by scripts/package-deb.sh." "" \
  " -- wrenmq developers <dev@wrenmq.invalid>  $date" \
  | gzip -9n >"$stage/usr/share/doc/wrenmq/changelog.gz"
chmod 0644 "$stage/usr/share/doc/wrenmq/changelog.gz"
# Deliberate choices lintian would otherwise report (see the comments in the file).
{
  echo "# Static on purpose: one binary for every Debian/Pi OS release, whatever its libc."
  if [ "$arch" = armhf ]; then
    echo "wrenmq: statically-linked-binary [usr/libexec/wrenmq/wrenmq-armv6]"
    echo "wrenmq: statically-linked-binary [usr/libexec/wrenmq/wrenmq-armv7]"
  elif file -b "$stage/usr/bin/wrenmq" | grep -q 'static-pie'; then
    # x86_64 musl builds are static-pie (ET_DYN, for address randomisation): lintian
    # takes them for a shared library.
    echo "wrenmq: shared-library-lacks-prerequisites [usr/bin/wrenmq]"
  else
    echo "wrenmq: statically-linked-binary [usr/bin/wrenmq]"
  fi
  echo "# wrenmq --help and README.Debian document the command; no man page yet."
  echo "wrenmq: no-manual-page [usr/bin/wrenmq]"
} >"$stage/usr/share/lintian/overrides/wrenmq"
chmod 0644 "$stage/usr/share/lintian/overrides/wrenmq"

# ---- maintainer scripts
for s in postinst prerm postrm; do install -m 0755 "scripts/debian/$s" "$stage/DEBIAN/$s"; done
[ "$arch" != armel ] || install -m 0755 scripts/debian/preinst-armel "$stage/DEBIAN/preinst"

# ---- control
# md5sums of every file but the conffile (dpkg keeps conffile sums itself, as dh_md5sums).
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
  | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: wrenmq
Version: $version
Architecture: $arch
Maintainer: wrenmq developers <dev@wrenmq.invalid>
Installed-Size: $size
Depends: adduser
Section: net
Priority: optional
Description: small, durable MQTT broker for low-power gateways
 wrenmq is an MQTT 3.1, 3.1.1 and 5.0 broker for Raspberry Pi-class gateways,
 meant as a drop-in replacement for Mosquitto 2.0: it reads Mosquitto's
 configuration, password and ACL files. Persistent sessions, their queued
 messages and retained messages survive restarts and upgrades.
 .
 The package does not conflict with mosquitto; only one of the two can listen
 on port 1883 (see README.Debian).
EOF

# Owned by root whoever builds (no fakeroot needed).
deb="$out/wrenmq_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "package-deb: $deb ($(stat -c %s "$deb") bytes)"
