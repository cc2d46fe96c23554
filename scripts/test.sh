#!/usr/bin/env bash
# The whole wrenmq test suite: Rust checks, then the black-box interop suite
# (tests/interop) against target/debug/wrenmq. Installs what it needs.
#
#   scripts/test.sh                      # everything, against wrenmq
#   BROKER=mosquitto scripts/test.sh     # interop suite against Mosquitto instead
#   PYTEST_ARGS="-k retained" scripts/test.sh
#   SKIP_RUST=1 BROKER=mosquitto scripts/test.sh   # only the interop suite
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- system packages: mosquitto (reference broker) and mosquitto-clients
need_apt=()
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 \
  || need_apt+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v stdbuf >/dev/null 2>&1 || need_apt+=(coreutils)
# tests/interop/test_tls.py and the wss tests of test_websockets.py make their
# certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# apt's mosquitto package may start a system broker on :1883; the suite uses its
# own ports, so that does not matter.

# ---- python packages: the system's when it has them, else a virtualenv in target/venv
# (never pip into the system Python).
PY=${PYTHON:-python3}
have_py_deps() { "$1" -c 'import paho.mqtt, pytest; assert int(paho.mqtt.__version__.split(".")[0]) >= 2' 2>/dev/null; }
if ! have_py_deps "$PY"; then
  venv=target/venv
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    "$PY" -m venv "$venv" 2>/dev/null || {
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
      rm -rf "$venv"
      "$PY" -m venv "$venv"
    }
  fi
  PY="$venv/bin/python"
  if ! have_py_deps "$PY"; then
    log "installing paho-mqtt>=2 and pytest into $venv"
    "$PY" -m pip install -q 'paho-mqtt>=2,<3' pytest
  fi
fi

# 1,000-client load test needs many descriptors
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- Rust
if [ -z "${SKIP_RUST:-}" ]; then
  log "cargo build";  cargo build
  log "cargo fmt";    cargo fmt --all -- --check
  log "cargo clippy"; cargo clippy --workspace --all-targets -- -D warnings
  log "cargo test";   cargo test --workspace
  log "layering";     scripts/check-layering.sh
fi

# ---- black-box interop suite
log "interop suite (broker: ${BROKER:-wrenmq})"
export WRENMQ_BIN=${WRENMQ_BIN:-target/debug/wrenmq}
# shellcheck disable=SC2086
"$PY" -m pytest -q tests/interop ${PYTEST_ARGS:-}
