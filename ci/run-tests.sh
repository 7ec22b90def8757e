#!/usr/bin/env bash
# Runs the given test binaries one after the other (inside the nested-KVM L1 VM), single-threaded,
# and exits non-zero if any failed.
set -u
rc=0
for t in "$@"; do
  echo "---- $(basename "$t")"
  "$t" --test-threads=1 || rc=1
done
exit $rc
