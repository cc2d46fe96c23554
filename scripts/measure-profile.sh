#!/usr/bin/env bash
# Measures release-profile candidates: stripped size of the aarch64 (musl), armv7 and
# x86_64 binaries, and broker speed on this machine (x86_64, native): N QoS 0 messages of
# 64 bytes through the broker on loopback from scripts/profile-load.py (closed loop, so
# nothing is dropped), reporting the broker's CPU time per message (best of RUNS) and
# the messages per second of that run; then the same load against the aarch64 binary
# under qemu-aarch64 (QEMU_N messages), whose user CPU time tracks the ARM instruction
# count (emulated, so only the ratios between candidates mean anything).
#
#   scripts/measure-profile.sh [N] [RUNS]     # defaults 5000000 3
#
# Each candidate overrides the [profile.release] in Cargo.toml through CARGO_PROFILE_RELEASE_*
# variables and builds into target/profile-measure/ (the normal target dir is untouched).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-5000000}
runs=${2:-3}
qemu_n=${QEMU_N:-500000}
export CARGO_TARGET_DIR=target/profile-measure

# name  opt-level  lto  codegen-units  panic
candidates=(
  "o3-unwind   3     true  1   unwind"
  "o3-abort    3     true  1   abort"
  "o2-abort    2     true  1   abort"
  "os-abort    s     true  1   abort"
  "oz-abort    z     true  1   abort"
  "o3-nolto    3     false 16  unwind"
)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

speed() { # n binary... -> "user-ns/msg total-ns/msg msgs/s" of the run with least user CPU
  local n=$1 best=""
  shift
  for _ in $(seq "$runs"); do
    local port; port=$(free_port)
    "$@" -l "127.0.0.1:$port" 2>/dev/null &
    local broker=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    local r; r=$(python3 scripts/profile-load.py "$port" "$broker" "$n")
    kill -TERM "$broker"; wait "$broker" || true
    if [ -z "$best" ] || [ "${r%% *}" -lt "${best%% *}" ]; then best=$r; fi
  done
  echo "$best"
}

printf '%-11s %-5s %-5s %-3s %-6s | %9s %9s %9s %9s | %8s %8s %8s | %9s\n' \
  name opt lto cgu panic a64-file a64-text armv7-file x86-file \
  x86-usr x86-tot x86-msg/s a64q-usr
for c in "${candidates[@]}"; do
  read -r name opt lto cgu panic <<<"$c"
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt CARGO_PROFILE_RELEASE_LTO=$lto \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu CARGO_PROFILE_RELEASE_PANIC=$panic \
    CARGO_PROFILE_RELEASE_STRIP=true
  sizes=()
  for t in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu; do
    cargo build -q --release --locked --target "$t" --bin wrenmq
    sizes+=("$(stat -c %s "$CARGO_TARGET_DIR/$t/release/wrenmq")")
  done
  a64="$CARGO_TARGET_DIR/aarch64-unknown-linux-musl/release/wrenmq"
  # Code size without the 64 KiB segment padding that makes file sizes step.
  text=$(aarch64-linux-gnu-size -A "$a64" | awk '$1==".text"{print $2}')
  read -r usr tot rate <<<"$(speed "$n" "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/wrenmq")"
  read -r qusr _ _ <<<"$(speed "$qemu_n" qemu-aarch64-static "$a64")"
  printf '%-11s %-5s %-5s %-3s %-6s | %9s %9s %9s %9s | %8s %8s %8s | %9s\n' \
    "$name" "$opt" "$lto" "$cgu" "$panic" "${sizes[0]}" "$text" "${sizes[1]}" "${sizes[2]}" \
    "$usr" "$tot" "$rate" "$qusr"
done
