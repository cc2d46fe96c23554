#!/usr/bin/env bash
# Static release builds of wrenmq for Raspberry Pi-class boards:
#
#   scripts/cross-build.sh                       # the three ARM targets below
#   scripts/cross-build.sh aarch64-unknown-linux-musl
#
#   aarch64-unknown-linux-musl       64-bit Pi OS (Pi 3, 4, 5, Zero 2 W); static musl
#   armv7-unknown-linux-gnueabihf    32-bit Pi OS (Pi 2 and later); static glibc
#                                    (-C target-feature=+crt-static, .cargo/config.toml)
#   arm-unknown-linux-gnueabi        ARMv6 (Pi Zero, Zero W, Pi 1: ARM1176JZF-S); static
#                                    glibc from Debian armel (ARMv5TE code, runs on v6)
#   x86_64-unknown-linux-musl        amd64 (the amd64 Debian package); static musl
#
# Why ARMv6 is arm-unknown-linux-gnueabi (soft-float calling convention): Debian's armhf
# libc is built for ARMv7 + Thumb-2, so a static armhf link would put ARMv7 code into an
# "ARMv6" binary; Debian armel's libc is ARMv5TE and links into a clean v6 binary. The
# binary is static, so its float ABI does not have to match the board's userland: it runs
# on Raspberry Pi OS armhf as well as on Debian armel. No prebuilt std exists for this
# target here (rustup answers 404), so std is compiled from the rust-src component with
# the same compiler (-Z build-std, enabled on stable with RUSTC_BOOTSTRAP=1).
# The ARMv6 binary carries TLS like the others: ring includes ARMv7/NEON assembly (so
# readelf reports the merged attributes as v7), but only runs it after its run-time CPU
# detection finds NEON; everything else is built for v6. What proves it runs on the Pi
# Zero's core is scripts/qemu-smoke.sh: plain TCP, TLS 1.2 and TLS 1.3 round trips under
# `qemu-arm -cpu arm1176`, where any ARMv7 instruction on those paths is SIGILL. Here the
# binary is checked for the soft-float calling convention (no VFP argument passing).
#
# Installs what is missing: the Rust targets (rustup target add), rust-src, and the Debian
# cross linkers and C headers (gcc-aarch64-linux-gnu with libc6-dev-arm64-cross,
# gcc-arm-linux-gnueabihf with libc6-dev-armhf-cross, gcc-arm-linux-gnueabi with
# libc6-dev-armel-cross: ring, under TLS, compiles C for the target).
# Binaries: target/<TARGET>/release/wrenmq (stripped by the release profile). Prints each
# one's size. Exit 3 when a tool cannot be installed (callers such as .ci/run may skip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabi)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cross-build: cannot install $*: no apt-get" >&2
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq && apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

for t in "${targets[@]}"; do
  case "$t" in
    aarch64-unknown-linux-musl) linker=aarch64-linux-gnu-gcc; pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7-unknown-linux-gnueabihf) linker=arm-linux-gnueabihf-gcc; pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    arm-unknown-linux-gnueabi) linker=arm-linux-gnueabi-gcc; pkgs=(gcc-arm-linux-gnueabi libc6-dev-armel-cross) ;;
    x86_64-unknown-linux-musl) linker=cc; pkgs=(gcc) ;;
    *) echo "cross-build: unsupported target $t" >&2; exit 2 ;;
  esac
  if [ "$t" = arm-unknown-linux-gnueabi ]; then
    if ! rustup component list --installed | grep -q '^rust-src'; then
      echo "==> rustup component add rust-src (std for $t is built from source)"
      rustup component add rust-src || { echo "cross-build: cannot add rust-src" >&2; exit 3; }
    fi
  elif ! rustup target list --installed | grep -qx "$t"; then
    echo "==> rustup target add $t"
    rustup target add "$t" || { echo "cross-build: cannot add Rust target $t" >&2; exit 3; }
  fi
  # The C headers too: ring (TLS) compiles C for the target.
  if ! command -v "$linker" >/dev/null 2>&1 \
    || { command -v dpkg >/dev/null 2>&1 && ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; }; then
    echo "==> installing ${pkgs[*]}"
    apt_install "${pkgs[@]}" || { echo "cross-build: cannot install ${pkgs[*]}" >&2; exit 3; }
  fi
done

# ARMv6 = ARM1176JZF-S: Rust code and libc must not pass floats in VFP registers (the
# armel ABI runs on every Pi userland). The CPU check is the qemu arm1176 smoke test.
check_armv6() {
  local attrs
  attrs=$(readelf -A "$1")
  if grep -q 'Tag_ABI_VFP_args: VFP registers' <<<"$attrs"; then
    echo "$attrs" >&2
    echo "cross-build: $1 passes floats in VFP registers: not the ARMv6 soft-float build" >&2
    exit 1
  fi
  echo "cross-build: $1: soft-float calling convention (CPU check: scripts/qemu-smoke.sh -cpu arm1176)"
}

# ring (TLS) compiles C with cc-rs, which looks for x86_64-linux-musl-gcc for this target;
# the host gcc does (ring's C needs no libc beyond a few freestanding headers).
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-cc}

for t in "${targets[@]}"; do
  echo "==> cargo build --release --target $t"
  if [ "$t" = arm-unknown-linux-gnueabi ]; then
    RUSTC_BOOTSTRAP=1 cargo build --release --locked --target "$t" --bin wrenmq \
      -Z build-std=std,panic_abort
    check_armv6 "target/$t/release/wrenmq"
  else
    cargo build --release --locked --target "$t" --bin wrenmq
  fi
done

echo
printf '%-32s %10s  %s\n' target bytes file
for t in "${targets[@]}"; do
  bin="target/$t/release/wrenmq"
  printf '%-32s %10s  %s\n' "$t" "$(stat -c %s "$bin")" "$(file -b "$bin" 2>/dev/null | cut -d, -f1-2 || true)"
done
