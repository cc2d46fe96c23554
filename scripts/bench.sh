#!/usr/bin/env bash
# Side-by-side benchmark: wrenmq vs Mosquitto on this machine, loopback only.
#
#   scripts/bench.sh             # full run: 3 rounds (A B A B A B), under 15 minutes
#   QUICK=1 scripts/bench.sh     # 1 round, shorter phases, under 2 minutes
#
# Each broker is pinned to core 0 and the generator (target/release/wrenmq-bench) to
# core 1. Per round and broker: a fresh broker process; idle VmRSS/VmHWM; 10,000 idle
# connections each subscribed to its own topic (RSS held, connect rate); 1,000 idle
# clients with keepalive 60 s (context switches of the broker over the hold = wake-ups);
# fan-in QoS 0 and QoS 1, fan-out, latency at a fixed rate, and publish throughput with
# 10 / 1,000 / 100,000 other exact subscriptions plus 1,000 wildcards. These run with
# persistence off in both brokers.
#
# QoS 1 fan-in with the subscriber as the bottleneck (issue 11), tag fanin1q: a fresh
# broker of each kind with its queue limit raised so neither drops (max_queued_messages 0
# = no limit in both, max_inflight_messages 20 in both, as in the other scenarios), 50
# QoS 1 publishers into one QoS 1 subscriber with an end-to-end window of QWINDOW (5,000)
# messages, so thousands wait in the subscriber's queue and every delivery comes from it.
#
# Durability (issue 6), persistence on, data directories under $OUT/pdata (the disk the
# repository is on): per round, QoS 1 fan-in to a persistent (clean session 0) subscriber
# against wrenmq `fsync batch`, wrenmq `fsync never` and Mosquitto with persistence on
# (its defaults: autosave_interval 1800), each a fresh broker and an empty directory,
# with the broker's /proc/PID/io write_bytes and the disk's bytes written
# (/sys/class/block/DEV/stat) over the phase. Once at the end, recovery: a persistent
# subscriber goes offline, RECOVER_MSGS QoS 1 messages are queued for it under
# `fsync batch`, the broker is killed with SIGKILL, and the time from starting wrenmq
# again to its first CONNACK is measured, with the record count it logs and its RSS.
# TLS (issue 13), persistence off, an ECDSA P-256 certificate made here with openssl: per
# round and broker, handshakes per second (TLS_HANDSHAKES new clients, 16 in flight,
# each done at its CONNACK), RSS per idle TLS connection (TLS_CONNS held) and QoS 0
# fan-in over TLS. Tags: tls_handshakes, tls_conns, tls_fanin0.
# Bridges (issue 14), tags bridge_fwd, bridge_fill, bridge_queued, bridge_drain: the
# *bridging* broker is wrenmq or Mosquitto with the same `connection` block (`topic
# bench/# out 1`, `restart_timeout 1`, max_inflight_messages 20 = the bridge's window
# on 3.1.1 in both, max_queued_messages 0 so neither drops) and each broker's default
# persistence: wrenmq `persistence true` + `fsync batch` (the uplink queue is journaled,
# on disk), Mosquitto `persistence false` (the queue in RAM). The *upstream* is one
# wrenmq (port UPORT, no persistence, no inflight or queue limit) for both, pinned with
# the generator to core 1 so the bridging broker has core 0; wrenmq because Mosquitto
# 2.0.11 as the upstream capped the wrenmq bridge at 14-18 k msg/s (it was the
# bottleneck) while the Mosquitto bridge ran at the same 12-16 k msg/s through either
# upstream; `up_cpu` in the raw lines shows the upstream's load. Per round and broker,
# forwarding: 50 QoS 1 publishers into the bridging broker, one QoS 1 subscriber on the
# upstream, end-to-end window BRIDGE_WINDOW, the generator sleeping in `poll` while its
# publishers wait (`--spin 0`: spinning, it starved the upstream on their shared core).
# Once at the end, per broker, with the
# upstream down: BRIDGE_QUEUE QoS 1 messages queued for the uplink (all acknowledged),
# the bridging broker's RSS, then the upstream started (a subscriber subscribes at once)
# and the time until the subscriber has them all (the rate from first to last delivery,
# so the bridge's reconnect delay is not in it). BRIDGE=0 skips all of it.
# The table printed at the end holds the median over rounds of every figure and the
# ratio wrenmq/mosquitto.
#
# Knobs (environment): ROUNDS, DUR (seconds per throughput phase), QWINDOW, CONNS, CONN_HOLD,
# WAKE_CLIENTS, WAKE_HOLD, LAT_RATE, PAYLOAD, WPORT, MPORT, OUT (results directory),
# RECOVER_MSGS (0 skips recovery), BRIDGE=0 (skips the bridge scenarios), BRIDGE_ONLY=1
# (runs only those), BRIDGE_QUEUE, BRIDGE_WINDOW, UPORT, SKIP_BUILD=1, BUILD (which
# wrenmq binary runs: `shipped`,
# the default on x86-64, is the binary the amd64 Debian package ships, static musl
# x86_64-unknown-linux-musl built by scripts/cross-build.sh with the release profile, so
# the table measures what users install, as it measures Debian's Mosquitto package;
# `dynamic` is the host's ordinary dynamically linked glibc build, the default on other
# hosts; `static` is the host target linked statically with glibc, as the armhf/armel
# binaries are). Raw lines go to
# $OUT/results.txt, the table to $OUT/table.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${QUICK:-}" ]; then
  ROUNDS=${ROUNDS:-1}; DUR=${DUR:-1}; CONN_HOLD=${CONN_HOLD:-1}; WAKE_HOLD=${WAKE_HOLD:-3}
  RECOVER_MSGS=${RECOVER_MSGS:-100000}
  BRIDGE_QUEUE=${BRIDGE_QUEUE:-100000}
else
  ROUNDS=${ROUNDS:-3}; DUR=${DUR:-4}; CONN_HOLD=${CONN_HOLD:-2}; WAKE_HOLD=${WAKE_HOLD:-10}
  RECOVER_MSGS=${RECOVER_MSGS:-1000000}
  BRIDGE_QUEUE=${BRIDGE_QUEUE:-1000000}
fi
BRIDGE=${BRIDGE:-1}
BRIDGE_WINDOW=${BRIDGE_WINDOW:-2000}
CONNS=${CONNS:-10000}
TLS_CONNS=${TLS_CONNS:-2000}
TLS_HANDSHAKES=${TLS_HANDSHAKES:-500}
WAKE_CLIENTS=${WAKE_CLIENTS:-1000}
QWINDOW=${QWINDOW:-5000}
LAT_RATE=${LAT_RATE:-2000}
PAYLOAD=${PAYLOAD:-16}
WPORT=${WPORT:-18831}
MPORT=${MPORT:-18832}
UPORT=${UPORT:-18833}
OUT=${OUT:-target/bench}
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- tools
MOSQUITTO=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
if [ ! -x "$MOSQUITTO" ]; then
  log "installing mosquitto"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto
  MOSQUITTO=/usr/sbin/mosquitto
fi
command -v taskset >/dev/null || { log "taskset (util-linux) is required"; exit 1; }
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 cores; broker and generator share a core"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((CONNS + 100)) ] || { log "ulimit -n $(ulimit -n) is below CONNS=$CONNS"; exit 1; }

HOST=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "${BUILD:-}" ]; then
  case "$HOST" in x86_64-unknown-linux-gnu) BUILD=shipped ;; *) BUILD=dynamic ;; esac
fi
case "$BUILD" in
  shipped) WRENMQ=target/x86_64-unknown-linux-musl/release/wrenmq ;;
  static) WRENMQ=target/static/$HOST/release/wrenmq ;;
  dynamic) WRENMQ=target/release/wrenmq ;;
  *) log "BUILD=$BUILD: expected shipped, dynamic or static"; exit 2 ;;
esac
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release (wrenmq-bench; wrenmq: $BUILD)"
  cargo build --release --quiet -p wrenmq-bench
  case "$BUILD" in
    shipped) scripts/cross-build.sh x86_64-unknown-linux-musl >/dev/null ;;
    static) RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet -p wrenmq \
      --target "$HOST" --target-dir target/static ;;
    dynamic) cargo build --release --quiet -p wrenmq ;;
  esac
fi
GEN=target/release/wrenmq-bench
log "wrenmq binary: $WRENMQ ($(file -b "$WRENMQ" 2>/dev/null | cut -d, -f1-2 || echo "$BUILD"))"

MCONF="$OUT/mosquitto.conf"
cat >"$MCONF" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20
max_queued_messages 1000
max_packet_size 2000000
log_dest stderr
log_type error
connection_messages false
EOF

# The subscriber-bound QoS 1 scenario: no queue limit in either broker.
MQCONF="$OUT/mosquitto-queue.conf"
grep -v '^max_queued_messages ' "$MCONF" >"$MQCONF"
echo "max_queued_messages 0" >>"$MQCONF"
cat >"$OUT/wrenmq-queue.conf" <<EOF
listener $WPORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20
max_queued_messages 0
max_packet_size 2000000
EOF
# TLS: one CA and a server certificate for localhost; both brokers use the same files.
TLSDIR="$PWD/$OUT/tls"
mkdir -p "$TLSDIR"
if [ ! -s "$TLSDIR/server.crt" ]; then
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$TLSDIR/ca.key" -out "$TLSDIR/ca.crt" -days 30 \
    -subj "/CN=wrenmq bench CA" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$TLSDIR/server.key" -out "$TLSDIR/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLSDIR/san.ext"
  openssl x509 -req -in "$TLSDIR/server.csr" -CA "$TLSDIR/ca.crt" -CAkey "$TLSDIR/ca.key" \
    -CAcreateserial -out "$TLSDIR/server.crt" -days 30 -extfile "$TLSDIR/san.ext" 2>/dev/null
  chmod 0644 "$TLSDIR"/*  # Mosquitto started as root reads them as user mosquitto
fi
tls_keys() { printf 'certfile %s\nkeyfile %s\n' "$TLSDIR/server.crt" "$TLSDIR/server.key"; }
{ cat "$MCONF"; tls_keys; } >"$OUT/mosquitto-tls.conf"
{ printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$WPORT"
  printf 'max_inflight_messages 20\nmax_queued_messages 1000\nmax_packet_size 2000000\n'
  tls_keys; } >"$OUT/wrenmq-tls.conf"

# Persistence on, for the durability scenarios. Each run gets an empty directory.
PDATA="$PWD/$OUT/pdata"
mkdir -p "$PDATA"
MPCONF="$OUT/mosquitto-persist.conf"
grep -v '^persistence ' "$MCONF" >"$MPCONF"
cat >>"$MPCONF" <<EOF
persistence true
persistence_location $PDATA/mosquitto-persist/
EOF
wconf() { # fsync-mode data-dir max-queued -> config text
  cat <<EOF
listener $WPORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $2
fsync $1
max_inflight_messages 20
max_queued_messages $3
max_packet_size 2000000
EOF
}
wconf batch "$PDATA/wrenmq-batch" 1000 >"$OUT/wrenmq-batch.conf"
wconf never "$PDATA/wrenmq-never" 1000 >"$OUT/wrenmq-never.conf"
# 0 = no limit: the offline subscriber must be able to hold every message.
wconf batch "$PDATA/recover" 0 >"$OUT/wrenmq-recover.conf"

# Bridges: the same `connection` block in both bridging brokers, each with its default
# persistence (wrenmq: on, fsync batch; Mosquitto: off), no queue limit.
bridge_block() {
  printf 'connection bench\naddress 127.0.0.1:%s\ntopic bench/# out 1\n' "$UPORT"
  printf 'remote_clientid bench-bridge\nrestart_timeout 1\n'
}
{ grep -v '^max_queued_messages ' "$MCONF"; echo "max_queued_messages 0"; bridge_block; } \
  >"$OUT/mosquitto-bridge.conf"
{ printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$WPORT"
  printf 'persistence_location %s\n' "$PDATA/wrenmq-bridge"
  printf 'max_inflight_messages 20\nmax_queued_messages 0\nmax_packet_size 2000000\n'
  bridge_block; } >"$OUT/wrenmq-bridge.conf"
# The upstream (wrenmq for both, see the top): no limits, so it never holds the bridge
# back, and no persistence: a persistent subscriber there (journaled) halved the wrenmq
# bridge's drain rate in trials, and the upstream is not what is measured.
{ printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$UPORT"
  printf 'max_inflight_messages 0\nmax_queued_messages 0\nmax_packet_size 2000000\n'
} >"$OUT/upstream.conf"

# Bytes written by the disk that holds $PDATA (the whole device: includes the file
# system's journal, and anything else writing at the time).
DEV_STAT=/sys/class/block/$(basename "$(df --output=source "$PDATA" | tail -1)")/stat
dev_written() { if [ -r "$DEV_STAT" ]; then awk '{ printf "%.0f\n", $7 * 512 }' "$DEV_STAT"; fi; }

# ---- broker lifecycle
BROKER_PID=""
stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}
UP_PID=""
stop_upstream() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill "$UP_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  UP_PID=""
}
trap 'stop_upstream; stop_broker' EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_broker() { # name -> sets BROKER_PID, PORT
  case "$1" in wrenmq*) PORT=$WPORT ;; *) PORT=$MPORT ;; esac
  # A leftover broker on the port would silently take this one's place.
  if port_open "$PORT"; then log "port $PORT is already in use"; exit 1; fi
  case "$1" in
    wrenmq)
      RUST_LOG=warn taskset -c 0 "$WRENMQ" -l "127.0.0.1:$PORT" --no-persistence 2>>"$OUT/wrenmq.log" &
      ;;
    mosquitto)
      taskset -c 0 "$MOSQUITTO" -c "$MCONF" 2>>"$OUT/mosquitto.log" &
      ;;
    wrenmq-queue)
      RUST_LOG=warn taskset -c 0 "$WRENMQ" -c "$OUT/wrenmq-queue.conf" 2>>"$OUT/wrenmq.log" &
      ;;
    mosquitto-queue)
      taskset -c 0 "$MOSQUITTO" -c "$MQCONF" 2>>"$OUT/mosquitto.log" &
      ;;
    wrenmq-tls)
      RUST_LOG=warn taskset -c 0 "$WRENMQ" -c "$OUT/wrenmq-tls.conf" 2>>"$OUT/wrenmq.log" &
      ;;
    mosquitto-tls)
      taskset -c 0 "$MOSQUITTO" -c "$OUT/mosquitto-tls.conf" 2>>"$OUT/mosquitto.log" &
      ;;
    wrenmq-batch | wrenmq-never)
      rm -rf "${PDATA:?}/$1"
      RUST_LOG=warn taskset -c 0 "$WRENMQ" -c "$OUT/$1.conf" 2>>"$OUT/wrenmq.log" &
      ;;
    wrenmq-bridge)
      rm -rf "${PDATA:?}/$1"
      RUST_LOG=warn taskset -c 0 "$WRENMQ" -c "$OUT/$1.conf" 2>>"$OUT/wrenmq.log" &
      ;;
    mosquitto-bridge)
      taskset -c 0 "$MOSQUITTO" -c "$OUT/$1.conf" 2>>"$OUT/mosquitto.log" &
      ;;
    mosquitto-persist)
      rm -rf "${PDATA:?}/$1"
      # Mosquitto started as root runs as user mosquitto, which must be able to save.
      mkdir -p "$PDATA/$1" && chmod 0777 "$PDATA/$1"
      taskset -c 0 "$MOSQUITTO" -c "$MPCONF" 2>>"$OUT/mosquitto.log" &
      ;;
  esac
  BROKER_PID=$!
  for _ in $(seq 100); do
    if port_open "$PORT"; then break; fi
    sleep 0.05
  done
  kill -0 "$BROKER_PID" 2>/dev/null || { log "$1 did not start (see $OUT/*.log)"; exit 1; }
  sleep 0.5 # let the probe connection go and the process settle
}

# The bridges' upstream, on the generator's core. `wait` = until it listens.
start_upstream() { # config [wait]
  if [ -n "${2:-}" ] && port_open "$UPORT"; then log "port $UPORT is already in use"; exit 1; fi
  RUST_LOG=warn taskset -c 1 "$WRENMQ" -c "$OUT/$1.conf" 2>>"$OUT/upstream.log" &
  UP_PID=$!
  if [ -n "${2:-}" ]; then
    for _ in $(seq 100); do port_open "$UPORT" && break; sleep 0.05; done
    kill -0 "$UP_PID" 2>/dev/null || { log "the upstream did not start (see $OUT/upstream.log)"; exit 1; }
  fi
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

gen() { # broker round scenario args...
  local b=$1 r=$2; shift 2
  local line d0 d1
  d0=$(dev_written)
  line=$(taskset -c 1 "$GEN" "$@" --host "127.0.0.1:$PORT" --pid "$BROKER_PID" --label "$b" 2>>"$OUT/gen.log") || true
  d1=$(dev_written)
  [ -n "$line" ] || line="scenario=$1 broker=$b error=no_output"
  [ -z "$d0" ] || line="$line dev_write_bytes=$((d1 - d0))"
  echo "round=$r tag=$TAG $line" | tee -a "$RESULTS" >&2
}

result() { # round key=value... : a line of its own
  local r=$1; shift
  echo "round=$r tag=$TAG $*" | tee -a "$RESULTS" >&2
}

run_round() { # broker round
  local b=$1 r=$2
  start_broker "$b"
  TAG=idle
  echo "round=$r tag=idle scenario=idle broker=$b rss_kb=$(status_kb "$BROKER_PID" VmRSS) hwm_kb=$(status_kb "$BROKER_PID" VmHWM)" \
    | tee -a "$RESULTS" >&2
  TAG=conns;    gen "$b" "$r" conns --count "$CONNS" --keepalive 60 --hold "$CONN_HOLD"
  TAG=wakeups;  gen "$b" "$r" conns --count "$WAKE_CLIENTS" --keepalive 60 --hold "$WAKE_HOLD" --settle 1
  TAG=fanin0;   gen "$b" "$r" fanin --qos 0 --payload "$PAYLOAD" --duration "$DUR"
  TAG=fanin1;   gen "$b" "$r" fanin --qos 1 --payload "$PAYLOAD" --duration "$DUR"
  TAG=fanout;   gen "$b" "$r" fanout --payload "$PAYLOAD" --duration "$DUR"
  TAG=latency;  gen "$b" "$r" latency --rate "$LAT_RATE" --payload "$PAYLOAD" --duration "$DUR"
  for n in 10 1000 100000; do
    TAG=subscale$n; gen "$b" "$r" subscale --exact "$n" --wildcards 1000 --payload "$PAYLOAD" --duration "$DUR"
  done
  stop_broker
}

# QoS 1 fan-in into a subscriber that is the bottleneck, queue limits raised (tag fanin1q).
run_queued() { # config round
  local c=$1 r=$2 b=${1%%-*}
  start_broker "$c"
  TAG=fanin1q; gen "$b" "$r" fanin --qos 1 --payload "$PAYLOAD" --duration "$DUR" --window "$QWINDOW"
  stop_broker
}

# The TLS scenarios (every generator connection over TLS).
run_tls() { # broker round
  local b=$1 r=$2
  start_broker "$b-tls"
  export WRENMQ_BENCH_TLS_CA="$TLSDIR/ca.crt"
  TAG=tls_handshakes; gen "$b" "$r" handshakes --count "$TLS_HANDSHAKES" --concurrency 16
  TAG=tls_conns;      gen "$b" "$r" conns --count "$TLS_CONNS" --keepalive 60 --hold "$CONN_HOLD"
  TAG=tls_fanin0;     gen "$b" "$r" fanin --qos 0 --payload "$PAYLOAD" --duration "$DUR"
  unset WRENMQ_BENCH_TLS_CA
  stop_broker
}

# QoS 1 fan-in to a persistent subscriber, persistence on. Tags: fanin1d_batch and
# fanin1d_never (wrenmq), fanin1d (mosquitto).
run_durable() { # config round
  local c=$1 r=$2 b=${1%%-*}
  case "$c" in
    wrenmq-batch) TAG=fanin1d_batch ;;
    wrenmq-never) TAG=fanin1d_never ;;
    *) TAG=fanin1d ;;
  esac
  start_broker "$c"
  gen "$b" "$r" fanin --qos 1 --sub-clean 0 --payload "$PAYLOAD" --duration "$DUR"
  stop_broker
  result "$r" "scenario=datadir broker=$b datadir_bytes=$(du -sb "$PDATA/$c" | cut -f1)"
}

# Recovery: RECOVER_MSGS messages queued for an offline persistent subscriber, SIGKILL
# (so nothing is compacted at shutdown), restart, time to the first CONNACK.
run_recovery() {
  local id=wrenmq-bench-durable t0 line records files bytes
  TAG=fill
  rm -rf "${PDATA:?}/recover"
  PORT=$WPORT
  if port_open "$PORT"; then log "port $PORT is already in use"; exit 1; fi
  RUST_LOG=warn taskset -c 0 "$WRENMQ" -c "$OUT/wrenmq-recover.conf" 2>>"$OUT/wrenmq.log" &
  BROKER_PID=$!
  for _ in $(seq 100); do port_open "$PORT" && break; sleep 0.05; done
  gen wrenmq 1 fill --msgs "$RECOVER_MSGS" --pubs 10 --payload "$PAYLOAD" --sub-id "$id"
  kill -9 "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
  TAG=recovery
  # What recovery will read (after it, the directory holds a fresh snapshot as well).
  files=$(cd "$PDATA/recover" && ls -l | awk 'NR > 1 { printf "%s:%s,", $9, $5 }')
  bytes=$(du -sb "$PDATA/recover" | cut -f1)
  t0=$(date +%s%N)
  RUST_LOG=info taskset -c 0 "$WRENMQ" -c "$OUT/wrenmq-recover.conf" 2>"$OUT/recover.log" &
  BROKER_PID=$!
  line=$(taskset -c 1 "$GEN" ready --t0-ns "$t0" --timeout 600 --client-id "$id" --clean 0 \
    --host "127.0.0.1:$PORT" --pid "$BROKER_PID" --label wrenmq 2>>"$OUT/gen.log") || true
  [ -n "$line" ] || line="scenario=ready broker=wrenmq error=no_output"
  records=$(sed -n 's/.*recovered \([0-9]*\) records.*/\1/p' "$OUT/recover.log" | head -1)
  result 1 "$line messages=$RECOVER_MSGS records=${records:-0}" \
    "datadir_bytes=$bytes files=${files%,}"
  kill -9 "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
  rm -rf "${PDATA:?}/recover"
}

# Forwarding through the bridge (tag bridge_fwd): publishers on the bridging broker, the
# subscriber on the upstream.
run_bridge_fwd() { # broker round
  local b=$1 r=$2
  start_upstream upstream wait
  start_broker "$b-bridge"
  TAG=bridge_fwd
  gen "$b" "$r" fanin --qos 1 --payload "$PAYLOAD" --duration "$DUR" --window "$BRIDGE_WINDOW" \
    --sub-host "127.0.0.1:$UPORT" --up-pid "$UP_PID" --spin 0
  stop_broker
  stop_upstream
}

# An outage: BRIDGE_QUEUE messages queued for the uplink (RSS), then the drain. The
# upstream is down from the start; once it is started the subscriber subscribes within
# a few ms, long before a bridge retrying every second is likely to reconnect (should
# one win that race, what it forwarded first shows as lost in the drain line).
run_bridge_queue() { # broker
  local b=$1 t0
  start_broker "$b-bridge"
  TAG=bridge_fill
  gen "$b" 1 fill --msgs "$BRIDGE_QUEUE" --pubs 50 --sub 0 --payload "$PAYLOAD"
  sleep 1
  TAG=bridge_queued
  result 1 "scenario=bridge_queued broker=$b msgs=$BRIDGE_QUEUE" \
    "rss_kb=$(status_kb "$BROKER_PID" VmRSS) hwm_kb=$(status_kb "$BROKER_PID" VmHWM)"
  if port_open "$UPORT"; then log "port $UPORT is already in use"; exit 1; fi
  t0=$(date +%s%N)
  start_upstream upstream
  TAG=bridge_drain
  gen "$b" 1 drain --msgs "$BRIDGE_QUEUE" --t0-ns "$t0" --subscribe 1 \
    --sub-host "127.0.0.1:$UPORT" --up-pid "$UP_PID" --timeout 120
  stop_broker
  stop_upstream
  rm -rf "${PDATA:?}/$b-bridge"
}

START=$(date +%s)
for r in $(seq "$ROUNDS"); do
  if [ -z "${BRIDGE_ONLY:-}" ]; then
    for b in wrenmq mosquitto; do
      log "round $r/$ROUNDS: $b"
      run_round "$b" "$r"
      log "round $r/$ROUNDS: $b over TLS"
      run_tls "$b" "$r"
    done
    for c in wrenmq-queue mosquitto-queue; do
      log "round $r/$ROUNDS: QoS 1 fan-in from a full queue, $c"
      run_queued "$c" "$r"
    done
    for c in wrenmq-batch wrenmq-never mosquitto-persist; do
      log "round $r/$ROUNDS: durable fan-in, $c"
      run_durable "$c" "$r"
    done
  fi
  if [ "$BRIDGE" != 0 ]; then
    for b in wrenmq mosquitto; do
      log "round $r/$ROUNDS: forwarding through a bridge, $b"
      run_bridge_fwd "$b" "$r"
    done
  fi
done
if [ "$BRIDGE" != 0 ]; then
  for b in wrenmq mosquitto; do
    log "bridge: $BRIDGE_QUEUE messages queued for the uplink during an outage, drain, $b"
    run_bridge_queue "$b"
  done
fi
if [ "$RECOVER_MSGS" -gt 0 ] && [ -z "${BRIDGE_ONLY:-}" ]; then
  log "recovery: $RECOVER_MSGS messages queued offline, SIGKILL, restart"
  run_recovery
fi
log "done in $(( $(date +%s) - START )) s"

BRIDGE_ONLY=${BRIDGE_ONLY:-} python3 - "$RESULTS" "$OUT/table.md" <<'EOF'
import os, statistics, sys

rows = []
for line in open(sys.argv[1]):
    kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
    rows.append(kv)

def med(tag, key, broker):
    # A (wrenmq tag, mosquitto tag) pair compares two different configurations.
    if isinstance(tag, tuple):
        tag = tag[0] if broker == "wrenmq" else tag[1]
    vals = []
    for kv in rows:
        if kv.get("tag") == tag and kv.get("broker") == broker and key in kv:
            try:
                vals.append(float(kv[key]))
            except ValueError:
                pass
    return statistics.median(vals) if vals else None

# (label, tag, key, unit, target-ratio check)
FIG = [
    ("idle RSS (kB)", "idle", "rss_kb", "<= 0.25"),
    ("idle VmHWM (kB)", "idle", "hwm_kb", None),
    ("RSS, 10,000 conns held (kB)", "conns", "rss_held_kb", None),
    ("RSS per idle connection (B)", "conns", "bytes_per_conn", "<= 0.33"),
    ("TLS handshakes per second (16 in flight)", "tls_handshakes", "handshakes_per_s", None),
    ("RSS per idle TLS connection (B)", "tls_conns", "bytes_per_conn", "<= 0.5"),
    ("fan-in QoS 0 over TLS, 50 pubs (msg/s)", "tls_fanin0", "msgs_per_s", None),
    ("fan-in QoS 0 over TLS lost", "tls_fanin0", "lost", None),
    ("connect+subscribe rate (conn/s)", "conns", "conn_per_s", None),
    # Both brokers at their default sys_interval 10: wrenmq's one $SYS timer is 0.1/s.
    ("idle wake-ups, 1,000 clients, sys_interval 10 (/s)", "wakeups", "wakeups_per_s", "max 0.1"),
    ("fan-in QoS 0, 50 pubs (msg/s)", "fanin0", "msgs_per_s", ">= 2"),
    ("fan-in QoS 0 lost", "fanin0", "lost", None),
    ("fan-in QoS 1, 50 pubs (msg/s)", "fanin1", "msgs_per_s", ">= 1.5"),
    ("fan-in QoS 1 lost", "fanin1", "lost", "== 0"),
    ("fan-in QoS 1, subscriber-bound, no queue limit (msg/s)", "fanin1q", "msgs_per_s", ">= 2"),
    ("fan-in QoS 1, subscriber-bound, lost", "fanin1q", "lost", "== 0"),
    ("fan-out QoS 0, 100 subs (deliveries/s)", "fanout", "msgs_per_s", ">= 2"),
    ("fan-out lost", "fanout", "lost", None),
    ("latency p50 (us)", "latency", "p50_us", None),
    ("latency p99 (us)", "latency", "p99_us", "<= 1"),
    ("latency p99.9 (us)", "latency", "p999_us", None),
    ("latency max (us)", "latency", "max_us", None),
    ("publish rate, 10 exact + 1k wildcard subs (msg/s)", "subscale10", "msgs_per_s", None),
    ("publish rate, 1,000 exact + 1k wildcard (msg/s)", "subscale1000", "msgs_per_s", None),
    ("publish rate, 100,000 exact + 1k wildcard (msg/s)", "subscale100000", "msgs_per_s", None),
    ("subscribe rate, 100,000 filters (subs/s)", "subscale100000", "subs_per_s", None),
    # Persistence on: wrenmq fsync batch / never vs Mosquitto persistence true (defaults).
    ("durable fan-in QoS 1: wrenmq fsync batch vs mosquitto persist (msg/s)", ("fanin1d_batch", "fanin1d"), "msgs_per_s", ">= 1"),
    ("durable fan-in QoS 1 lost (fsync batch)", ("fanin1d_batch", "fanin1d"), "lost", "== 0"),
    ("durable fan-in QoS 1: wrenmq fsync never vs mosquitto persist (msg/s)", ("fanin1d_never", "fanin1d"), "msgs_per_s", None),
    ("durable fan-in QoS 1 lost (fsync never)", ("fanin1d_never", "fanin1d"), "lost", "== 0"),
    ("bytes written per msg, fsync batch (/proc/PID/io write_bytes)", ("fanin1d_batch", "fanin1d"), "bytes_per_msg", None),
    ("bytes written per msg, fsync never (/proc/PID/io write_bytes)", ("fanin1d_never", "fanin1d"), "bytes_per_msg", None),
    ("data dir after the run, stopped (bytes)", ("fanin1d_batch", "fanin1d"), "datadir_bytes", None),
    # Bridges: each broker's default persistence (wrenmq journaled, Mosquitto in RAM).
    ("bridge forwarding QoS 1, 50 pubs -> bridge -> upstream sub (msg/s)", "bridge_fwd", "msgs_per_s", ">= 2"),
    ("bridge forwarding lost", "bridge_fwd", "lost", "== 0"),
    ("bridge: queueing for the uplink while it is down, 50 pubs (msg/s)", "bridge_fill", "msgs_per_s", None),
    ("bridge: RSS with the queue held (kB)", "bridge_queued", "rss_kb", None),
    ("bridge: VmHWM with the queue held (kB)", "bridge_queued", "hwm_kb", None),
    ("bridge: drain after the outage, first to last msg (msg/s)", "bridge_drain", "msgs_per_s", None),
    ("bridge: upstream start to its first forwarded msg (ms; reconnect)", "bridge_drain", "first_ms", None),
    ("bridge: upstream start to last msg of the drain (ms)", "bridge_drain", "last_ms", None),
    ("bridge: drain lost", "bridge_drain", "lost", "== 0"),
]

def fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.2f}"

def check(target, ratio, w):
    if target is None:
        return ""
    op, num = target.split()
    num = float(num)
    if op == "==":  # absolute target on the wrenmq figure
        return "met" if w is not None and w == num else "MISSED"
    if op == "max":  # absolute upper bound on the wrenmq figure
        return "met" if w is not None and w <= num else "MISSED"
    if ratio is None:
        return "n/a"
    ok = ratio <= num if op == "<=" else ratio >= num
    return "met" if ok else "MISSED"

out = ["| figure | wrenmq | mosquitto | wrenmq/mosquitto | target | |",
       "| --- | ---: | ---: | ---: | --- | --- |"]
for label, tag, key, target in FIG:
    w, m = med(tag, key, "wrenmq"), med(tag, key, "mosquitto")
    ratio = w / m if (w is not None and m) else None
    tgt = "" if target is None else (target.replace("==", "=") + ("" if ("==" in target or "max" in target) else " x"))
    out.append(f"| {label} | {fmt(w)} | {fmt(m)} | {'n/a' if ratio is None else f'{ratio:.2f}'} | {tgt} | {check(target, ratio, w)} |")
# Derived: scaling with the size of the subscription table.
for b in ("wrenmq", "mosquitto"):
    pass
sw = [med("subscale100000", "msgs_per_s", b) for b in ("wrenmq", "mosquitto")]
s10 = [med("subscale10", "msgs_per_s", b) for b in ("wrenmq", "mosquitto")]
sc = [a / c if (a and c) else None for a, c in zip(sw, s10)]
ok = "met" if sc[0] is not None and sc[0] >= 0.8 else "MISSED"
out.append(f"| rate with 100,000 subs / with 10 | {fmt(sc[0])} | {fmt(sc[1])} | | wrenmq >= 0.8 | {ok} |")
# Generator and broker CPU (fraction of one core): is the generator the bottleneck?
for tag, label in (("fanin0", "fan-in QoS 0"), ("fanin1", "fan-in QoS 1"), ("fanin1q", "fan-in QoS 1, subscriber-bound"), ("fanout", "fan-out"), ("subscale100000", "subscale 100k")):
    g = [med(tag, "gen_cpu", b) for b in ("wrenmq", "mosquitto")]
    c = [med(tag, "broker_cpu", b) for b in ("wrenmq", "mosquitto")]
    out.append(f"| CPU during {label}: generator / broker | {fmt(g[0])} / {fmt(c[0])} | {fmt(g[1])} / {fmt(c[1])} | | | |")
# The bridges' shared upstream shares core 1 with the generator: is it the bottleneck?
for tag, label in (("bridge_fwd", "bridge forwarding"), ("bridge_drain", "bridge drain")):
    g, c, u = ([med(tag, k, b) for b in ("wrenmq", "mosquitto")] for k in ("gen_cpu", "broker_cpu", "up_cpu"))
    out.append(f"| CPU during {label}: generator / bridging broker / upstream | {fmt(g[0])} / {fmt(c[0])} / {fmt(u[0])} | {fmt(g[1])} / {fmt(c[1])} / {fmt(u[1])} | | | |")
# CPU time per forwarded message: steadier than the rate on a shared machine, where a
# window-bound pipeline's rate moves with every wake-up delay.
for tag, label in (("bridge_fwd", "forwarding"), ("bridge_drain", "drain")):
    per = []
    for b in ("wrenmq", "mosquitto"):
        vals = [float(kv["broker_cpu"]) / float(kv["msgs_per_s"]) * 1e6 for kv in rows
                if kv.get("tag") == tag and kv.get("broker") == b
                and float(kv.get("msgs_per_s", 0) or 0) > 0 and "broker_cpu" in kv]
        per.append(statistics.median(vals) if vals else None)
    r = per[0] / per[1] if (per[0] is not None and per[1]) else None
    out.append(f"| bridge {label}: bridging broker CPU per message (us) | {fmt(per[0])} | {fmt(per[1])} | {'n/a' if r is None else f'{r:.2f}'} | | |")
q = [kv.get("msgs") for kv in rows if kv.get("tag") == "bridge_queued"]
if q:
    out.append(f"| bridge: messages queued for the uplink in the rows above | {int(q[0]):,} | {int(q[-1]):,} | | | |")
# Disk bytes (whole device, incl. the file system's journal) per message received, fsync
# batch only: under `never` and in Mosquitto the kernel writes back after the phase.
dev = []
for tag, b in (("fanin1d_batch", "wrenmq"), ("fanin1d", "mosquitto")):
    vals = [float(kv["dev_write_bytes"]) / max(float(kv["received"]), 1) for kv in rows
            if kv.get("tag") == tag and kv.get("broker") == b and "dev_write_bytes" in kv and "received" in kv]
    dev.append(statistics.median(vals) if vals else None)
out.append(f"| disk bytes written per msg, fsync batch (device stat, incl. fs journal) | {fmt(dev[0])} | {fmt(dev[1])} | | | |")
for tag, label in (("fanin1d_batch", "durable fan-in, fsync batch"), ("fanin1d_never", "durable fan-in, fsync never")):
    g, c = med(tag, "gen_cpu", "wrenmq"), med(tag, "broker_cpu", "wrenmq")
    out.append(f"| CPU during {label}: generator / broker | {fmt(g)} / {fmt(c)} | | | | |")
g, c = med("fanin1d", "gen_cpu", "mosquitto"), med("fanin1d", "broker_cpu", "mosquitto")
out.append(f"| CPU during durable fan-in, mosquitto persist: generator / broker | | {fmt(g)} / {fmt(c)} | | | |")
# Recovery (wrenmq only, one run).
fill = [kv for kv in rows if kv.get("tag") == "fill" and "msgs_per_s" in kv]
rec = [kv for kv in rows if kv.get("tag") == "recovery" and "connack_ms" in kv]
if fill:
    out.append(f"| queueing {int(fill[0]['msgs']):,} QoS 1 msgs for an offline session, fsync batch (msg/s) | {fmt(float(fill[0]['msgs_per_s']))} | | | | |")
if rec:
    kv = rec[0]
    n = int(kv.get("records", 0))
    out.append(f"| recovery after SIGKILL: records replayed | {n:,} | | | >= {int(kv['messages']):,} | {'met' if n >= int(kv['messages']) else 'MISSED'} |")
    out.append(f"| recovery: data dir read at start (bytes) | {fmt(float(kv['datadir_bytes']))} | | | | |")
    out.append(f"| recovery: start to first CONNACK (ms) | {fmt(float(kv['connack_ms']))} | | | | |")
    out.append(f"| recovery: start to TCP connect accepted by the kernel (ms) | {fmt(float(kv['tcp_ms']))} | | | | |")
    out.append(f"| recovery: session present after restart | {kv['session_present']} | | | = 1 | {'met' if kv['session_present'] == '1' else 'MISSED'} |")
    out.append(f"| RSS after recovery (kB) | {fmt(float(kv['rss_kb']))} | | | | |")
    out.append(f"| VmHWM after recovery (kB) | {fmt(float(kv['hwm_kb']))} | | | | |")
errors = [kv for kv in rows if "error" in kv]
if os.environ.get("BRIDGE_ONLY"):
    out = out[:2] + [l for l in out[2:] if "bridge" in l]
text = "\n".join(out)
rounds = len({kv.get("round") for kv in rows})
print(f"\nMedians over {rounds} round(s); raw lines in {sys.argv[1]}\n")
print(text)
if errors:
    print(f"\n{len(errors)} scenario run(s) failed:")
    for kv in errors:
        print(f"  round {kv.get('round')} {kv.get('broker')} {kv.get('tag')}: {kv.get('error')}")
open(sys.argv[2], "w").write(text + "\n")
EOF
