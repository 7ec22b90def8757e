#!/usr/bin/env bash
# The guest-test contract between the test crates and ci/test.sh.
#
# A test that boots a guest calls a marking helper first (rkt_tests::guest_kvm_or_skip, through
# E2e::require_kvm; stage1-vmm's tests/common: linux_kvm_or_skip, kvm_or_skip), which prints
#   GUEST-TEST: here   <binary> <test>   this machine's KVM boots the guest: the test runs here
#   GUEST-TEST: nested <binary> <test>   it cannot: the test prints SKIP (reason naming
#                                        ci/nested-kvm) and must pass inside ci/nested-kvm
# ci/run-tests.sh runs the nested ones inside the harness and prints, per test,
#   GUEST-RESULT: pass|fail|skip|not-run <binary> <test>
#
#   ci/guest-tests.sh needed HOST_LOG            the "BINARY TEST" lines to run in the harness
#   ci/guest-tests.sh check HOST_LOG GUEST_LOG   exits 1 unless every nested test passed in the
#       harness and every host skip that names ci/nested-kvm belongs to a marked test (a guest
#       test without the mark would otherwise pass as a skip)
set -uo pipefail

# "VERDICT BINARY TEST" for every mark in the log (a mark may share its line with other output).
marks() { grep -oh 'GUEST-TEST: .*' "$1" | sed 's/^GUEST-TEST: //' | sort -u; }

needed() { marks "$1" | awk '$1 == "nested" { print $2, $3 }'; }

check() {
  local host=$1 guest=$2 bad=0 bin test result name
  if [ -z "$(marks "$host")" ]; then
    echo "GUEST TESTS: no test printed a GUEST-TEST mark (is the marking helper broken?)"
    return 1
  fi
  while read -r bin test; do
    result=$(grep -oh 'GUEST-RESULT: .*' "$guest" 2>/dev/null \
      | awk -v b="$bin" -v t="$test" '$3 == b && $4 == t { r = $2 } END { print r }')
    if [ "$result" != pass ]; then
      echo "GUEST TEST NOT PASSED IN ci/nested-kvm: $test ($(basename "$bin")): ${result:-not run}"
      bad=1
    fi
  done < <(needed "$host")
  # Host skips that say the test needs ci/nested-kvm, from a test that did not mark itself.
  while read -r name; do
    if ! needed "$host" | awk -v n="$name" '$2 == n || substr($2, length($2) - length(n) - 1) == "::" n { f = 1 } END { exit !f }'; then
      echo "UNMARKED GUEST TEST: $name skipped on the host for ci/nested-kvm but has no GUEST-TEST mark, so it runs nowhere"
      bad=1
    fi
  done < <(grep -oh 'SKIP: .*' "$host" | grep 'ci/nested-kvm' | sed 's/^SKIP: //; s/: .*//' | sort -u)
  if [ "$bad" -eq 0 ]; then
    echo "guest tests: $(needed "$host" | wc -l) needed ci/nested-kvm, all passed there; $(marks "$host" | awk '$1 == "here"' | wc -l) ran on the host"
  fi
  return "$bad"
}

case "${1:-}" in
  needed) needed "$2" ;;
  check) check "$2" "$3" ;;
  *) echo "usage: $0 needed HOST_LOG | check HOST_LOG GUEST_LOG" >&2; exit 2 ;;
esac
