#!/usr/bin/env bash
# Fuzzing with cargo-fuzz on the stable toolchain (`-s none`: coverage-guided, no sanitizer;
# `FUZZ_ASAN=1` builds with AddressSanitizer through RUSTC_BOOTSTRAP=1).
#   ci/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
# `make fuzz` runs each target for a bounded time; `make test` runs a short smoke run of each.
# Each run starts from the committed seeds (fuzz/seeds/<target>) plus the local corpus
# (fuzz/corpus/<target>, not committed). A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/: turn it into a regression test in the crate it hit.
# Prints one line per target: `FUZZ <target> execs=N cov=N ft=N corpus=N secs=S`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}; shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked -q
fi
san=(-s none)
if [ "${FUZZ_ASAN:-0}" = 1 ]; then san=(-s address); export RUSTC_BOOTSTRAP=1; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build "${san[@]}" --release >&2
fail=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds=(); [ -d "seeds/$t" ] && seeds=("seeds/$t")
  log=$(mktemp)
  if cargo fuzz run "${san[@]}" --release "$t" "corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    st=ok
  else
    st=FAILED; fail=1; tail -40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line"); ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$line")
  echo "FUZZ $t execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} secs=$secs $st"
  rm -f "$log"
done
exit $fail
