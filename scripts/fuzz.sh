#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), one after the other.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600 broker # 10 minutes, only the broker target
#
# Needs the nightly toolchain (cargo-fuzz uses -Zsanitizer); installs cargo-fuzz with
# `cargo install` when missing. New corpus entries go to fuzz/work/<target> (gitignored);
# the committed seeds in fuzz/corpus/<target> are read, never written. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes this script exit non-zero.
#
# Environment: FUZZ_SKIP_MISSING=1 exits 0 with a message (instead of failing) when nightly
# or cargo-fuzz cannot be had; CI uses it so that a missing tool never fails a run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(decode split broker topic store websocket)

unavailable() {
  if [ -n "${FUZZ_SKIP_MISSING:-}" ]; then
    echo "fuzz: SKIPPED: $*"
    exit 0
  fi
  echo "fuzz: $*" >&2
  exit 1
}

rustup run nightly rustc --version >/dev/null 2>&1 \
  || unavailable "no nightly toolchain (cargo-fuzz needs one; rustup toolchain install nightly)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz \
    || unavailable "cannot install cargo-fuzz"
fi

cd fuzz
echo "==> fuzz: building ${targets[*]}"
if ! cargo +nightly fuzz build -O >work-build.log 2>&1; then
  tail -n 40 work-build.log >&2
  unavailable "cargo +nightly fuzz build failed (see above)"
fi
rm -f work-build.log
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  echo "==> fuzz: $t for ${seconds}s"
  # -max_len 4096: MQTT packets of interest are small; longer inputs only slow the fuzzer.
  # -rss_limit_mb 1024: a decode that allocates more than that for a small input is a bug.
  if ! cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 \
      -print_final_stats=1 >"work/$t.log" 2>&1; then
    tail -n 60 "work/$t.log" >&2
    echo "fuzz: $t FAILED; input in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "work/$t.log" \
    | sed "s/^/fuzz: $t: /" || true
  grep -E "^Done [0-9]+ runs" "work/$t.log" | sed "s/^/fuzz: $t: /" || true
done
echo "fuzz: all targets ran ${seconds}s without a crash"
