#!/usr/bin/env bash
# Start-to-exit latency of a pod: `rkt run --stage1=ns` of the hello image vs `crun run` of an
# OCI bundle with the same rootfs (the static hello binary). Runs alternate; each side's
# median (ms) is reported, and the last line is `RATIO run_ns_vs_crun <rkt/crun>`.
#
# Inputs (env): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI (build/stage1-ns.aci),
# HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci), N (runs per side, default 20),
# NET (the pod's --net, default none: a new network namespace with only lo, as crun's default
# spec gives its container; NET=default adds rkt's CNI ptp network, which crun does not set up,
# and prints the ratio as run_ns_default_net_vs_crun), BENCH_FS (where rkt's data and crun's
# bundle live: `journal`, the default, a loop-mounted ext4 with a journal; `root` this machine's
# journal-less root file system; bench/lib.sh, bench_data_fs), INSECURE (rkt's
# --insecure-options, default `image`; `image,seccomp` runs the apps without their seccomp
# filter, which crun's default spec does not give its container either), BASE_RKT_BIN and
# BASE_STAGE1_NS_ACI (another build, e.g. a commit's from a worktree: each round then runs it
# too, right after ours, with a store of its own, and prints its median, its ratio to crun and
# `RATIO run_ns_vs_base` before the last line). bench/phases.sh shows where the time goes.
# Needs root and crun (Debian package `crun`, installed by ci/deps.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib.sh
bench_ns_inputs run-ns
command -v crun >/dev/null || { echo "run-ns: crun not installed (apt-get install crun)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run-ns: needs root" >&2; exit 1; }

bench_ns_workdir ns
echo "run-ns: rkt's data and crun's bundle on $([ "$data_fs" = "$work" ] && echo "the file system of /tmp" || echo "a journaled ext4 (BENCH_FS=journal)")" >&2

# rkt finds stage1-<flavor>.aci next to its binary for --stage1=ns; otherwise name the file.
if [ "$(dirname "$(dirname "$rkt")")/stage1-ns.aci" -ef "$stage1" ] || [ "$(dirname "$rkt")/stage1-ns.aci" -ef "$stage1" ]; then
  s1=(--stage1=ns)
else
  s1=(--stage1-path="$stage1")
fi
s1+=(--net="$net")
R=("$rkt" --dir="$dir" --insecure-options="${INSECURE:-image}")

bench_hello_image
# Warm-up: imports the stage1 image and renders both trees once.
"${R[@]}" run "${s1[@]}" example.com/bench-hello >/dev/null
"${R[@]}" gc --grace-period=0s >/dev/null

# The build to compare against, if named: its own store beside ours, the same image.
B=()
if [ -n "${BASE_RKT_BIN:-}${BASE_STAGE1_NS_ACI:-}" ]; then
  base_rkt=$(realpath "${BASE_RKT_BIN:?BASE_RKT_BIN: the rkt of the build to compare against}")
  base_stage1=$(realpath "${BASE_STAGE1_NS_ACI:?BASE_STAGE1_NS_ACI: the stage1-ns image of that build}")
  B=("$base_rkt" --dir="$data_fs/data-base" --insecure-options="${INSECURE:-image}")
  base_cleanup() { "${B[@]}" gc --grace-period=0s >/dev/null 2>&1 || true; bench_ns_cleanup; }
  trap base_cleanup EXIT
  "${B[@]}" fetch "$work/hello.aci" >/dev/null 2>&1
  "${B[@]}" run --stage1-path="$base_stage1" --net="$net" example.com/bench-hello >/dev/null
  "${B[@]}" gc --grace-period=0s >/dev/null
fi

bundle=$data_fs/bundle
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/dev" "$bundle/rootfs/sys" "$bundle/rootfs/tmp"
cp "$hello" "$bundle/rootfs/bin/hello"
(cd "$bundle" && crun spec)
python3 - "$bundle/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/hello"]
c["process"]["terminal"] = False
c["root"]["readonly"] = False
json.dump(c, open(p, "w"), indent=1)
EOF
# crun refuses hybrid cgroup hosts whose cgroup2 hierarchy holds controllers; such hosts run
# crun in a private mount namespace without /sys/fs/cgroup/unified (the host is unchanged).
# crun creates no cgroups either way (--cgroup-manager=disabled).
hybrid=0
if grep -qs . /sys/fs/cgroup/unified/cgroup.controllers; then hybrid=1; fi
crun_us() { # bundle id -> prints microseconds of `crun run` (setup outside the interval)
  unshare -m sh -c '
    [ "$3" = 1 ] && umount /sys/fs/cgroup/unified
    t0=$(date +%s%N); crun --cgroup-manager=disabled run -b "$1" "$2" >/dev/null; rc=$?
    t1=$(date +%s%N); [ $rc = 0 ] || exit $rc; echo $(( (t1 - t0) / 1000 ))' sh "$1" "$2" "$hybrid"
}
crun_us "$bundle" "bench-warm-$$" >/dev/null

now_ns() { date +%s%N; }
rk=() cr=() rb=()
for i in $(seq 1 "$n"); do
  t0=$(now_ns)
  "${R[@]}" run "${s1[@]}" example.com/bench-hello >/dev/null
  t1=$(now_ns)
  rk+=($(( (t1 - t0) / 1000 )))
  "${R[@]}" gc --grace-period=0s >/dev/null
  if [ ${#B[@]} -gt 0 ]; then
    t0=$(now_ns)
    "${B[@]}" run --stage1-path="$base_stage1" --net="$net" example.com/bench-hello >/dev/null
    t1=$(now_ns)
    rb+=($(( (t1 - t0) / 1000 )))
    "${B[@]}" gc --grace-period=0s >/dev/null
  fi
  cr+=("$(crun_us "$bundle" "bench-$$-$i")")
done

median() { printf '%s\n' "$@" | bench_median %d; } # integer microseconds
mr=$(median "${rk[@]}")
mc=$(median "${cr[@]}")
printf 'rkt run --stage1=ns --net=%s  median %d.%03d ms (n=%d)\n' "$net" $((mr / 1000)) $((mr % 1000)) "$n"
printf 'crun run             median %d.%03d ms (n=%d)\n' $((mc / 1000)) $((mc % 1000)) "$n"
# The median of the per-pair ratios (each rkt run against the crun run right after it) moves
# less with the machine's spells than the ratio of the two medians, which the RATIO line keeps.
paired=$(printf '%.2f' "$(for i in "${!rk[@]}"; do awk -v a="${rk[$i]}" -v b="${cr[$i]}" 'BEGIN { printf "%.4f\n", a / b }'; done | bench_median %.6f)")
echo "paired: median of the $n per-pair ratios $paired"
if [ ${#rb[@]} -gt 0 ]; then
  mb=$(median "${rb[@]}")
  printf 'base build           median %d.%03d ms (n=%d)\n' $((mb / 1000)) $((mb % 1000)) "$n"
  echo "RATIO $(bench_net_ratio run_ns_base crun "$net") $(awk -v a="$mb" -v b="$mc" 'BEGIN { printf "%.2f", a / b }')"
  echo "RATIO run_ns_vs_base $(awk -v a="$mr" -v b="$mb" 'BEGIN { printf "%.2f", a / b }')"
fi
name=$(bench_net_ratio run_ns crun "$net")
echo "RATIO $name $(awk -v a="$mr" -v b="$mc" 'BEGIN { printf "%.2f", a / b }')"
