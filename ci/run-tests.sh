#!/usr/bin/env bash
# Runs the guest tests listed in FILE ("BINARY TEST" a line, from `ci/guest-tests.sh needed`)
# inside the nested-KVM L1 VM: each binary once, single-threaded, with exactly its listed tests
# (`--exact`). Then prints one line per listed test for `ci/guest-tests.sh check`:
#   GUEST-RESULT: pass|fail|skip|not-run BINARY TEST
# pass: libtest reported ok and the test marked itself `GUEST-TEST: here` (it booted its guest);
# skip: ok without that mark (it skipped here too); not-run: libtest never reported it.
# Exits non-zero unless every listed test passed.
set -u
rc=0
out=$(mktemp -d)
mapfile -t bins < <(awk '!seen[$1]++ { print $1 }' "$1")
for bin in "${bins[@]}"; do
  mapfile -t tests < <(awk -v b="$bin" '$1 == b { print $2 }' "$1")
  echo "---- $(basename "$bin") ${tests[*]}"
  # Streamed as it runs; stdout (libtest's result lines) and stderr (the marks) kept apart too.
  "$bin" --exact --test-threads=1 --show-output "${tests[@]}" \
    2> >(tee "$out/err" >&2) | tee "$out/out"
  wait $! 2>/dev/null
  for t in "${tests[@]}"; do
    verdict=$(awk -v t="$t" 'index($0, "test " t " ... ") == 1 { print $NF; exit }' "$out/out")
    if [ "$verdict" = ok ]; then
      if grep -oh 'GUEST-TEST: .*' "$out/err" \
        | awk -v b="$bin" -v t="$t" '$2 == "here" && $3 == b && $4 == t { f = 1 } END { exit !f }'
      then r=pass; else r=skip; fi
    elif [ -n "$verdict" ]; then r=fail
    else r=not-run; fi
    [ "$r" = pass ] || rc=1
    echo "GUEST-RESULT: $r $bin $t"
  done
  # L1's memory after each binary (its root is a tmpfs overlay: what tests leave stays in RAM).
  awk '/^(MemAvailable|Shmem|AnonHugePages):/ { printf "%s %d MiB  ", $1, $2 / 1024 } END { print "" }' \
    /proc/meminfo
done
exit $rc
