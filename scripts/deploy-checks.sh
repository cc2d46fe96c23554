#!/usr/bin/env bash
# The deployment checks of .ci/run (issue 4), after scripts/test.sh:
#   1. the systemd unit (systemd-analyze verify) and install.sh (DESTDIR);
#   2. static ARM cross builds and their MQTT round trip under qemu user emulation;
#   3. a short pass of every fuzz target (FUZZ_SECONDS each, default 25).
# A tool that cannot be installed (no network, no nightly, no qemu package) skips its step
# with a SKIPPED line; a real failure (build error, failed round trip, fuzz crash) fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*"; }

log "systemd unit and install.sh"
[ -x target/debug/wrenmq ] || cargo build --bin wrenmq
scripts/check-unit.sh target/debug/wrenmq

log "ARM cross builds"
code=0
scripts/cross-build.sh || code=$?
if [ "$code" -eq 3 ]; then
  echo "deploy-checks: SKIPPED cross builds and qemu smoke test: a tool could not be installed"
elif [ "$code" -ne 0 ]; then
  exit "$code"
else
  log "qemu smoke test"
  code=0
  scripts/qemu-smoke.sh || code=$?
  if [ "$code" -eq 3 ]; then
    echo "deploy-checks: SKIPPED qemu smoke test: qemu-user could not be installed"
  elif [ "$code" -ne 0 ]; then
    exit "$code"
  fi
fi

log "fuzzing (${FUZZ_SECONDS:-25}s per target)"
FUZZ_SKIP_MISSING=1 scripts/fuzz.sh "${FUZZ_SECONDS:-25}"
