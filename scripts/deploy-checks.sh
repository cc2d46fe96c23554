#!/usr/bin/env bash
# The deployment checks of .ci/run (issue 4), after scripts/test.sh:
#   1. the systemd unit (systemd-analyze verify) and install.sh (DESTDIR);
#   2. static ARM cross builds (ARMv6 included) and their MQTT round trip under qemu user
#      emulation;
#   3. the Debian packages: the amd64 one checked in full in a scratch dpkg root
#      (scripts/check-deb.sh: contents, conffiles, lintian, upgrade keeps queued messages),
#      arm64/armhf/armel built from the cross builds and linted;
#   4. a short pass of every fuzz target (FUZZ_SECONDS each, default 15).
# A tool that cannot be installed (no network, no nightly, no qemu package) skips its step
# with a SKIPPED line; a real failure (build error, failed round trip, fuzz crash) fails.
#
# Build time: the release profile (fat LTO, one codegen unit) takes 1.5-4 minutes per
# target on CI's 2 cores, four targets over half of CI's time. These checks test that the
# targets build, link statically, run under qemu and package, which does not depend on
# LTO, so they build with the release profile's LTO off and 16 codegen units (same
# opt-level, panic=abort, strip). DEPLOY_FULL_PROFILE=1 builds exactly as shipped; the
# shipped profile's sizes are measured by scripts/measure-profile.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${DEPLOY_FULL_PROFILE:-}" ]; then
  export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi

log() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

log "systemd unit and install.sh"
[ -x target/debug/wrenmq ] || cargo build --bin wrenmq
scripts/check-unit.sh target/debug/wrenmq

log "ARM cross builds"
code=0
arm_built=
scripts/cross-build.sh || code=$?
if [ "$code" -eq 3 ]; then
  echo "deploy-checks: SKIPPED cross builds and qemu smoke test: a tool could not be installed"
elif [ "$code" -ne 0 ]; then
  exit "$code"
else
  arm_built=1
  log "qemu smoke test"
  code=0
  scripts/qemu-smoke.sh || code=$?
  if [ "$code" -eq 3 ]; then
    echo "deploy-checks: SKIPPED qemu smoke test: qemu-user could not be installed"
  elif [ "$code" -ne 0 ]; then
    exit "$code"
  fi
fi

log "Debian packages"
code=0
scripts/check-deb.sh || code=$?
if [ "$code" -eq 3 ]; then
  echo "deploy-checks: SKIPPED amd64 package: the x86_64 musl target could not be installed"
elif [ "$code" -ne 0 ]; then
  exit "$code"
fi
if [ -n "$arm_built" ]; then
  scripts/check-deb.sh --arm
else
  echo "deploy-checks: SKIPPED arm64/armhf/armel packages: no cross builds"
fi

log "fuzzing (${FUZZ_SECONDS:-15}s per target)"
FUZZ_SKIP_MISSING=1 scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
