#!/usr/bin/env bash
# Runs the cross-built ARM binaries under qemu user emulation and checks MQTT round trips
# with mosquitto_sub/mosquitto_pub on loopback ports (plain TCP, TLS 1.2 and TLS 1.3), then
# a clean SIGTERM stop.
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

# One self-signed server certificate for the TLS round trips. They prove the TLS code runs
# on each CPU; on ARMv6 they are what shows that ring's ARMv7/NEON assembly (present in
# the binary) is only used after ring's CPU detection finds such a CPU.
command -v openssl >/dev/null 2>&1 \
  || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl \
  || { echo "qemu-smoke: cannot install openssl" >&2; exit 3; }
certs=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$certs/key.pem" -out "$certs/cert.pem" 2>/dev/null

# round_trip TARGET PORT LABEL [client args...]: subscribe, then publish until the
# subscriber has its message (no guessing how long emulated start-up and SUBSCRIBE take).
# Bounded: 40 tries, 0.5 s apart.
round_trip() {
  local t=$1 port=$2 label=$3
  shift 3
  local msg="hello from $t over $label $$" out ok=
  out=$(mktemp)
  timeout 60 mosquitto_sub -h 127.0.0.1 -p "$port" "$@" -t "smoke/#" -q 1 -C 1 -i "smoke-sub-$label" \
    >"$out" 2>/dev/null &
  local sub=$!
  pids+=("$sub")
  for _ in $(seq 40); do
    sleep 0.5
    if ! kill -0 "$broker" 2>/dev/null; then break; fi
    mosquitto_pub -h 127.0.0.1 -p "$port" "$@" -t "smoke/$t" -q 1 -m "$msg" 2>/dev/null || continue
    if ! kill -0 "$sub" 2>/dev/null; then ok=1; break; fi
  done
  wait "$sub" 2>/dev/null || true
  if [ -z "$ok" ] || [ "$(cat "$out")" != "$msg" ]; then
    echo "qemu-smoke: $t: $label round trip failed (subscriber got: '$(cat "$out")')" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "qemu-smoke: $t: $label round trip OK"
  rm -f "$out"
}

for t in "${targets[@]}"; do
  bin="target/$t/release/wrenmq"
  [ -x "$bin" ] || { echo "qemu-smoke: $bin missing (run scripts/cross-build.sh $t)" >&2; exit 1; }
  qemu=$(qemu_for "$t")
  [ -n "$qemu" ] || { echo "qemu-smoke: no qemu for $t" >&2; exit 3; }
  port=$(free_port)
  tport=$(free_port)
  log=$(mktemp)
  conf="$certs/$t.conf"
  printf '%s\n' "persistence false" "allow_anonymous true" \
    "listener $port 127.0.0.1" \
    "listener $tport 127.0.0.1" "certfile $certs/cert.pem" "keyfile $certs/key.pem" >"$conf"
  echo "==> $t under $(basename "$qemu") on 127.0.0.1:$port (TLS on $tport)"
  cpu=()
  [ "$t" = arm-unknown-linux-gnueabi ] && cpu=(-cpu arm1176)
  "$qemu" "${cpu[@]}" "$bin" -c "$conf" -v >"$log" 2>&1 &
  broker=$!
  pids+=("$broker")

  # Wait for the listeners (emulated start-up is slow), at most 20 s.
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$tport") 2>/dev/null; then break; fi
    kill -0 "$broker" 2>/dev/null || break
    sleep 0.2
  done

  round_trip "$t" "$port" tcp
  round_trip "$t" "$tport" tls1.2 --cafile "$certs/cert.pem" --tls-version tlsv1.2
  round_trip "$t" "$tport" tls1.3 --cafile "$certs/cert.pem" --tls-version tlsv1.3

  kill -TERM "$broker"
  code=0
  wait "$broker" || code=$?
  if [ "$code" -ne 0 ]; then
    echo "qemu-smoke: $t: exit code $code after SIGTERM" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "qemu-smoke: $t: SIGTERM -> exit 0"
  rm -f "$log"
done
rm -rf "$certs"
echo "qemu-smoke: all targets passed (plain TCP, TLS 1.2, TLS 1.3)"
