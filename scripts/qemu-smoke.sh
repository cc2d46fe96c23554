#!/usr/bin/env bash
# Runs the cross-built ARM binaries under qemu user emulation and checks an MQTT round
# trip with mosquitto_sub/mosquitto_pub on a loopback port, then a clean SIGTERM stop.
#
#   scripts/qemu-smoke.sh [TARGET...]   # default: the ARM targets of scripts/cross-build.sh
#
# The ARMv6 build runs with "-cpu arm1176" (the Pi Zero / Pi 1 core), so an ARMv7
# instruction on the tested paths is an illegal instruction here, as on the board.
#
# Expects target/<TARGET>/release/wrenmq (scripts/cross-build.sh builds them). Installs
# qemu-user-static (or qemu-user) and mosquitto-clients when missing; exits 3 when it
# cannot, so that callers such as .ci/run can skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabi)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
qemu_for() {
  case "$1" in
    aarch64-*) arch=aarch64 ;;
    armv7-* | arm-*) arch=arm ;;
    *) echo "qemu-smoke: unsupported target $1" >&2; exit 2 ;;
  esac
  command -v "qemu-$arch-static" 2>/dev/null || command -v "qemu-$arch" 2>/dev/null || true
}

need=()
for t in "${targets[@]}"; do [ -n "$(qemu_for "$t")" ] || need=(qemu-user-static); done
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 \
  || need+=(mosquitto-clients)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]}"
  { as_root apt-get update -qq \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
  || { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user mosquitto-clients; } \
  || { echo "qemu-smoke: cannot install ${need[*]}" >&2; exit 3; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for t in "${targets[@]}"; do
  bin="target/$t/release/wrenmq"
  [ -x "$bin" ] || { echo "qemu-smoke: $bin missing (run scripts/cross-build.sh $t)" >&2; exit 1; }
  qemu=$(qemu_for "$t")
  [ -n "$qemu" ] || { echo "qemu-smoke: no qemu for $t" >&2; exit 3; }
  port=$(free_port)
  log=$(mktemp)
  echo "==> $t under $(basename "$qemu") on 127.0.0.1:$port"
  cpu=()
  [ "$t" = arm-unknown-linux-gnueabi ] && cpu=(-cpu arm1176)
  "$qemu" "${cpu[@]}" "$bin" -l "127.0.0.1:$port" -v >"$log" 2>&1 &
  broker=$!
  pids+=("$broker")

  # Wait for the listener (emulated start-up is slow), at most 20 s.
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$broker" 2>/dev/null || break
    sleep 0.2
  done

  # Subscribe, then publish until the subscriber has its message: no guessing how long
  # emulated start-up and SUBSCRIBE take. Bounded: 40 tries, 0.5 s apart.
  msg="hello from $t $$"
  out=$(mktemp)
  timeout 60 mosquitto_sub -h 127.0.0.1 -p "$port" -t "smoke/#" -q 1 -C 1 -i "smoke-sub" \
    >"$out" 2>/dev/null &
  sub=$!
  pids+=("$sub")
  ok=
  for _ in $(seq 40); do
    sleep 0.5
    if ! kill -0 "$broker" 2>/dev/null; then break; fi
    mosquitto_pub -h 127.0.0.1 -p "$port" -t "smoke/$t" -q 1 -m "$msg" 2>/dev/null || continue
    if ! kill -0 "$sub" 2>/dev/null; then ok=1; break; fi
  done
  wait "$sub" 2>/dev/null || true
  if [ -z "$ok" ] || [ "$(cat "$out")" != "$msg" ]; then
    echo "qemu-smoke: $t: round trip failed (subscriber got: '$(cat "$out")')" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "qemu-smoke: $t: round trip OK ('$msg')"

  kill -TERM "$broker"
  code=0
  wait "$broker" || code=$?
  if [ "$code" -ne 0 ]; then
    echo "qemu-smoke: $t: exit code $code after SIGTERM" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "qemu-smoke: $t: SIGTERM -> exit 0"
  rm -f "$log" "$out"
done
echo "qemu-smoke: all targets passed"
