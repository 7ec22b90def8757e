#!/usr/bin/env bash
# The whole test suite (the README's test command runs this through `make test`):
#   1. build everything (ci/build.sh), 2. fmt + clippy, 3. host tests (cargo test),
#   4. the guest-booting tests that skipped on the host (they mark themselves, see
#      ci/guest-tests.sh) inside ci/nested-kvm; CI fails unless each passes there, and fails on
#      a host skip that names ci/nested-kvm from an unmarked test,
#   5. the harness self-test, 6. a short fuzzing smoke run of every fuzz target (ci/fuzz.sh,
#      FUZZ_SMOKE_SECS each, default 10; `make fuzz` runs them longer); then the list of
#      skipped tests with their reasons and a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log=$(mktemp -d /tmp/rkt-test.XXXXXX)
fail=0
failed_steps=""
step() { echo; echo "=================== $* ==================="; }

step "build"
bash ci/build.sh || { echo "BUILD FAILED"; exit 1; }

step "fmt + clippy + doc"
if ! cargo fmt --all -- --check >"$log/fmt" 2>&1; then cat "$log/fmt"; echo "cargo fmt: FAILED"; fail=1; failed_steps+=" fmt"; fi
if ! cargo clippy --workspace --all-targets -q -- -D warnings >"$log/clippy" 2>&1; then
  cat "$log/clippy"; echo "cargo clippy: FAILED"; fail=1; failed_steps+=" clippy"
fi
# Doc links that resolve to nothing or to private items are errors: the docs name them.
if ! RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q >"$log/doc" 2>&1; then
  cat "$log/doc"; echo "cargo doc: FAILED"; fail=1; failed_steps+=" doc"
fi

export RKT_BIN="$root/build/bin/rkt" RKT_BUILD_DIR="$root/build" RKT_TEST_BIN_DIR="$root/build/bin"
export RKT_STAGE1_NS_ACI="$root/build/stage1-ns.aci" RKT_STAGE1_KVM_ACI="$root/build/stage1-kvm.aci"
export RKT_TEST_KERNEL="$root/build/kernel/vmlinux"

step "host tests (cargo test --workspace)"
cargo test --workspace --no-fail-fast -- --show-output 2>&1 | tee "$log/host"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

step "guest tests inside ci/nested-kvm"
# Guest-booting tests mark themselves (ci/guest-tests.sh has the contract): those that could not
# boot their guest on this host run here, exactly those, and each must pass inside the harness.
bash ci/guest-tests.sh needed "$log/host" > "$log/guest-tests"
retried=0
if [ -s "$log/guest-tests" ]; then
  NESTED_KVM_TIMEOUT=${NESTED_KVM_TIMEOUT:-2400} \
    ci/nested-kvm bash ci/run-tests.sh "$log/guest-tests" 2>&1 | tee "$log/guest"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    # The harness's L1 (TCG with nested SVM) occasionally wedges whole (QEMU idle, no guest
    # progress): run what did not pass once more, in a fresh L1. ci/guest-tests.sh check takes
    # each test's last result; the summary counts a retried test once.
    : > "$log/guest-retry"
    while read -r b t; do
      grep -qF "GUEST-RESULT: pass $b $t" "$log/guest" || echo "$b $t" >> "$log/guest-retry"
    done < "$log/guest-tests"
    retried=$(wc -l < "$log/guest-retry")
    if [ "$retried" -gt 0 ]; then
      echo "RETRY: $retried guest test(s) did not pass; running them once more in a fresh L1"
      NESTED_KVM_TIMEOUT=${NESTED_KVM_TIMEOUT:-2400} \
        ci/nested-kvm bash ci/run-tests.sh "$log/guest-retry" 2>&1 | tee "$log/guest-2"
      grep -oh 'GUEST-RESULT: .*' "$log/guest-2" >> "$log/guest"
    fi
  fi
else
  echo "none needed: every marked guest test ran on the host" | tee "$log/guest"
fi
# Its "GUEST TEST NOT PASSED" lines (one per needed test whose last result is not a pass) also
# make the summary's guest failures.
bash ci/guest-tests.sh check "$log/host" "$log/guest" | tee "$log/guest-check"
[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=1; failed_steps+=" guest-check"; }

step "nested-kvm harness self-test"
bash ci/test-nested-kvm.sh 2>&1 | tee "$log/harness"
[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=1; failed_steps+=" harness-self-test"; }

step "fuzz smoke (ci/fuzz.sh ${FUZZ_SMOKE_SECS:-10} s per target)"
bash ci/fuzz.sh "${FUZZ_SMOKE_SECS:-10}" 2>&1 | tee "$log/fuzz"
[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=1; failed_steps+=" fuzz-smoke"; }

step "skipped tests"
# Tests print "SKIP: <test>: <reason>". Marked guest tests skip on a host whose KVM cannot boot
# their guest and run for real inside ci/nested-kvm (checked above): listed apart from real skips.
grep -oh 'SKIP: .*' "$log"/host 2>/dev/null | sort -u > "$log/skips-host"
{ grep -v 'ci/nested-kvm' "$log/skips-host"; grep -oh 'SKIP: .*' "$log"/guest "$log"/harness; } \
  2>/dev/null | sort -u > "$log/skips"
echo "skipped on the host, run inside ci/nested-kvm instead: $(wc -l < "$log/guest-tests")"
echo "skipped (not run anywhere in this suite):"
if [ -s "$log/skips" ]; then sed 's/^/  /' "$log/skips"; else echo "  (none)"; fi

step "summary"
passed=0; failed=0
for f in "$log"/host "$log"/guest "$log"/guest-2; do
  [ -f "$f" ] || continue
  while read -r p fl; do passed=$((passed+p)); failed=$((failed+fl)); done < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$f")
done
# A retried guest test counts once, by its last result: failures are the host's plus the
# guest tests whose last result is not a pass.
if [ "$retried" -gt 0 ]; then
  failed=0
  while read -r p fl; do failed=$((failed+fl)); done < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log/host")
  failed=$((failed + $(grep -c '^GUEST TEST NOT PASSED' "$log/guest-check")))
  echo "(guest tests retried in a fresh L1: $retried; see RETRY above)"
fi
# Which tests failed, by name, next to the counts (a CI log is often read from its end).
{
  grep -h '^test .* \.\.\. FAILED$' "$log/host" 2>/dev/null | sed 's/^test \(.*\) \.\.\. FAILED$/  host: \1/'
  grep -h '^GUEST TEST NOT PASSED\|^UNMARKED GUEST TEST' "$log/guest-check" 2>/dev/null | sed 's/^/  /'
} > "$log/failed-names"
if [ -s "$log/failed-names" ]; then echo "failed tests:"; cat "$log/failed-names"; fi
[ -z "$failed_steps" ] || echo "failed steps:$failed_steps (output above)"
echo "$passed passed, $failed failed"
if [ "$fail" -ne 0 ]; then echo "TEST SUITE FAILED"; exit 1; fi
echo "TEST SUITE PASSED"
