#!/usr/bin/env bash
# Keeps the sans-IO layers honest (shared/DESIGN.md): `src/protocol`, `src/broker` and `src/bridge` may not
# use the clock, sockets, files, threads or OS randomness — `now` and seeds are passed in —
# and `protocol` depends on nothing else in the crate. Test code (files named tests.rs or
# under tests/, and everything after a `#[cfg(test)]` line) is exempt. Also: the crate
# forbids `unsafe`, and no non-test source file grows past 800 lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail=0
# Non-test lines of the .rs files under $1, as "path:line:text".
non_test() {
  find "$1" -name '*.rs' ! -name 'tests.rs' ! -path '*/tests/*' -print0 | sort -z |
    xargs -0 awk '/^[[:space:]]*#\[cfg\(test\)\]/ { skip[FILENAME]=1 }
                  !skip[FILENAME] && !/^[[:space:]]*\/\// { print FILENAME ":" FNR ":" $0 }'
}

# Sockets and name resolution are I/O; an address (`std::net::SocketAddr`, `IpAddr`) is a
# value, which the broker may carry (per-listener settings are keyed by listener address).
io='Instant::now|SystemTime|\b(TcpStream|TcpListener|UdpSocket|ToSocketAddrs|lookup_host)\b|\bmio::|std::fs|std::thread|std::process|RandomState|getrandom|std::env'
for dir in src/protocol src/broker src/bridge; do
  hits=$(non_test "$dir" | grep -E "$io" || true)
  if [ -n "$hits" ]; then
    echo "check-layering: $dir must stay sans-IO (clock, sockets, files, threads, randomness):"
    echo "$hits"
    fail=1
  fi
done

hits=$(non_test src/protocol | grep -E 'crate::(broker|net|store|auth|config|cli)' || true)
if [ -n "$hits" ]; then
  echo "check-layering: src/protocol depends on nothing else in the crate:"
  echo "$hits"
  fail=1
fi

for root in src/lib.rs src/main.rs; do
  grep -q '^#!\[forbid(unsafe_code)\]' "$root" || { echo "check-layering: $root lacks #![forbid(unsafe_code)]"; fail=1; }
done

# Fuzz harnesses (`fuzzing.rs`, built only for cfg(fuzzing) and tests) are test code and
# not counted. `oversize_allowed` lists files excused from the cap while a split is pending (none now).
oversize_allowed=" "
while IFS= read -r f; do
  case "$oversize_allowed" in *" $f "*) continue ;; esac
  n=$(awk '/^[[:space:]]*#\[cfg\(test\)\]/ { exit } { n++ } END { print n + 0 }' "$f")
  if [ "$n" -gt 800 ]; then
    echo "check-layering: $f has $n non-test lines (limit 800): split it by concern"
    fail=1
  fi
done < <(find src -name '*.rs' ! -name 'tests.rs' ! -name 'fuzzing.rs' ! -path '*/tests/*' | sort)

[ "$fail" -eq 0 ] && echo "check-layering: ok"
exit "$fail"
