#!/usr/bin/env bash
# Where the time of `rkt run --stage1=ns` of the hello image goes: N runs with
# RKT_TRACE_PHASES=1 (pod_abi::trace: rkt, stage1-ns, guest-init and the app's exec print
# `rkt-phase <monotonic ms> <process> <phase>` on stderr), then per phase the median time since
# `rkt main` and the median step from the phase before. With STRACE=1 one more run is traced:
# `strace -f -tt` and `strace -f -c` files in $OUT (default: a new /tmp directory, kept).
#
# Inputs (env): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI (build/stage1-ns.aci),
# HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci), N (runs, default 20),
# NET (the pod's --net, default none: a new network namespace with lo only, as crun's default
# spec; NET=default adds the CNI ptp + host-local + ipMasq setup), BENCH_FS (as run-ns.sh:
# `journal` by default, or `root`). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib.sh
bench_ns_inputs phases
[ "$(id -u)" = 0 ] || { echo "phases: needs root" >&2; exit 1; }

bench_ns_workdir phases
out=${OUT:-$(mktemp -d /tmp/rkt-phases-out.XXXXXX)}
mkdir -p "$out"

R=("$rkt" --dir="$dir" --insecure-options=image)
S=(--stage1-path="$stage1" --net="$net")
bench_hello_image
# Warm-up: imports the stage1 image and renders both trees once.
"${R[@]}" run "${S[@]}" example.com/bench-hello >/dev/null 2>&1
"${R[@]}" gc --grace-period=0s >/dev/null 2>&1

: >"$out/phases.txt"
for i in $(seq 1 "$n"); do
  t0=$(date +%s%N)
  RKT_TRACE_PHASES=1 "${R[@]}" run "${S[@]}" example.com/bench-hello >/dev/null 2>"$work/err"
  t1=$(date +%s%N)
  echo "run $i wall_ms $(( (t1 - t0) / 1000 ))e-3" >>"$out/phases.txt"
  grep '^rkt-phase ' "$work/err" | sed "s/^/run $i /" >>"$out/phases.txt" || true
  "${R[@]}" gc --grace-period=0s >/dev/null 2>&1
done

python3 - "$out/phases.txt" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(dict)
walls = []
for line in open(sys.argv[1]):
    f = line.split()
    if f[2] == "wall_ms":
        walls.append(float(f[3]))
        continue
    # run I rkt-phase MS PROCESS PHASE
    runs[f[1]].setdefault(f"{f[4]} {f[5]}", float(f[3]))
offsets = collections.defaultdict(list)
for r in runs.values():
    t0 = r.get("rkt main")
    if t0 is None:
        continue
    for k, v in r.items():
        offsets[k].append(v - t0)
rows = sorted((statistics.median(v), k) for k, v in offsets.items())
print(f"{'phase (process phase)':32} {'at ms':>8} {'step ms':>8}   (medians of {len(runs)} runs)")
prev = 0.0
for at, k in rows:
    print(f"{k:32} {at:8.2f} {at - prev:8.2f}")
    prev = at
print(f"{'wall (shell, fork to exit)':32} {statistics.median(walls):8.2f}")
EOF
echo "phase lines: $out/phases.txt" >&2

if [ "${STRACE:-0}" = 1 ]; then
  command -v strace >/dev/null || { echo "phases: strace not installed" >&2; exit 1; }
  strace -f -tt -o "$out/strace-tt.txt" "${R[@]}" run "${S[@]}" example.com/bench-hello >/dev/null 2>&1
  "${R[@]}" gc --grace-period=0s >/dev/null 2>&1
  strace -f -c -o "$out/strace-c.txt" "${R[@]}" run "${S[@]}" example.com/bench-hello >/dev/null 2>&1
  head -25 "$out/strace-c.txt"
  echo "strace: $out/strace-tt.txt $out/strace-c.txt" >&2
fi
