#!/usr/bin/env bash
# Static release builds of wrenmq for Raspberry Pi-class boards:
#
#   scripts/cross-build.sh                       # both targets below
#   scripts/cross-build.sh aarch64-unknown-linux-musl
#
#   aarch64-unknown-linux-musl       64-bit Pi OS (Pi 3, 4, 5, Zero 2 W); static musl
#   armv7-unknown-linux-gnueabihf    32-bit Pi OS (Pi 2 and later); static glibc
#                                    (-C target-feature=+crt-static, .cargo/config.toml)
#
# Installs what is missing: the Rust targets (rustup target add) and the Debian cross
# linkers and C headers (gcc-aarch64-linux-gnu with libc6-dev-arm64-cross,
# gcc-arm-linux-gnueabihf with libc6-dev-armhf-cross: ring, under TLS, compiles C).
# Binaries: target/<TARGET>/release/wrenmq (stripped by the release profile). Prints each
# one's size. Exit 3 when a tool cannot be installed (callers such as .ci/run may skip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)

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
    *) echo "cross-build: unsupported target $t" >&2; exit 2 ;;
  esac
  if ! rustup target list --installed | grep -qx "$t"; then
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

for t in "${targets[@]}"; do
  echo "==> cargo build --release --target $t"
  cargo build --release --locked --target "$t" --bin wrenmq
done

echo
printf '%-32s %10s  %s\n' target bytes file
for t in "${targets[@]}"; do
  bin="target/$t/release/wrenmq"
  printf '%-32s %10s  %s\n' "$t" "$(stat -c %s "$bin")" "$(file -b "$bin" 2>/dev/null | cut -d, -f1-2 || true)"
done
