#!/usr/bin/env bash
# The whole test suite (the README's test command runs this through `make test`):
#   1. build everything (ci/build.sh), 2. fmt + clippy, 3. host tests (cargo test),
#   4. guest-booting tests inside ci/nested-kvm (directly on hosts whose KVM can boot Linux),
#   5. the harness self-test; then the list of skipped tests with their reasons and a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log=$(mktemp -d /tmp/rkt-test.XXXXXX)
fail=0
step() { echo; echo "=================== $* ==================="; }

step "build"
bash ci/build.sh || { echo "BUILD FAILED"; exit 1; }

step "fmt + clippy"
if ! cargo fmt --all -- --check >"$log/fmt" 2>&1; then cat "$log/fmt"; echo "cargo fmt: FAILED"; fail=1; fi
if ! cargo clippy --workspace --all-targets -q -- -D warnings >"$log/clippy" 2>&1; then
  cat "$log/clippy"; echo "cargo clippy: FAILED"; fail=1
fi

export RKT_BIN="$root/build/bin/rkt" RKT_BUILD_DIR="$root/build" RKT_TEST_BIN_DIR="$root/build/bin"
export RKT_STAGE1_NS_ACI="$root/build/stage1-ns.aci" RKT_STAGE1_KVM_ACI="$root/build/stage1-kvm.aci"
export RKT_TEST_KERNEL="$root/build/kernel/vmlinux"

step "host tests (cargo test --workspace)"
cargo test --workspace --no-fail-fast -- --show-output 2>&1 | tee "$log/host"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

step "guest tests inside ci/nested-kvm"
# Test binaries that boot guests; each self-skips on a host whose KVM cannot boot Linux, and
# runs for real inside the harness. Collected from cargo's JSON so paths match this build.
cargo test --workspace --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, os
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"): continue
    t = m["target"]
    if not m.get("profile", {}).get("test"): continue
    name = t["name"]
    vmm = m["package_id"].find("stage1-vmm") >= 0
    if name.startswith("kvm") or (vmm and t["kind"] == ["test"]):
        print(m["executable"])
    elif vmm and "lib" in t["kind"]:
        # the unit-test binary: only its guest-booting tests run inside the harness
        print(m["executable"] + " devices::virtio::linux_tests")
' > "$log/guest-bins"
if [ -s "$log/guest-bins" ]; then
  ci/nested-kvm bash ci/run-tests.sh "$log/guest-bins" 2>&1 | tee "$log/guest"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
else
  echo "no guest test binaries found"; fail=1
fi

step "nested-kvm harness self-test"
bash ci/test-nested-kvm.sh 2>&1 | tee "$log/harness"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

step "skipped tests"
# Tests print "SKIP: <test>: <reason>". Guest-booting tests skip on a host whose KVM cannot boot
# Linux and run for real inside ci/nested-kvm: those are listed apart from real skips.
grep -oh 'SKIP: .*' "$log"/host 2>/dev/null | sort -u > "$log/skips-host"
{ grep -v 'ci/nested-kvm' "$log/skips-host"; grep -oh 'SKIP: .*' "$log"/guest "$log"/harness; } \
  2>/dev/null | sort -u > "$log/skips"
echo "skipped on the host, run inside ci/nested-kvm instead: $(grep -c 'ci/nested-kvm' "$log/skips-host")"
echo "skipped (not run anywhere in this suite):"
if [ -s "$log/skips" ]; then sed 's/^/  /' "$log/skips"; else echo "  (none)"; fi

step "summary"
passed=0; failed=0
for f in "$log"/host "$log"/guest; do
  [ -f "$f" ] || continue
  while read -r p fl; do passed=$((passed+p)); failed=$((failed+fl)); done < <(
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$f")
done
echo "$passed passed, $failed failed"
if [ "$fail" -ne 0 ]; then echo "TEST SUITE FAILED"; exit 1; fi
echo "TEST SUITE PASSED"
