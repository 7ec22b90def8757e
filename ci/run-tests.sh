#!/usr/bin/env bash
# Runs test binaries one after the other (inside the nested-KVM L1 VM), single-threaded, and
# exits non-zero if any failed. Argument: a file with one "BINARY [FILTER]" per line.
set -u
rc=0
while read -r bin filter; do
  [ -n "$bin" ] || continue
  echo "---- $(basename "$bin") ${filter:-}"
  # shellcheck disable=SC2086
  "$bin" --test-threads=1 --show-output $filter || rc=1
done < "$1"
exit $rc
