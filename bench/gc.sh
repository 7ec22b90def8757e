#!/usr/bin/env bash
# `rkt gc` of many exited ns pods (each leaves its stage1 and app overlays mounted until gc, as
# rkt's did) vs the floor of that work in a python3 script: one read of /proc/self/mountinfo, a
# lazy umount2 of every pod mount, shutil.rmtree of the pod directories (not umount(8), which
# reads mountinfo itself at every call). rkt's gc also runs the stage1 `gc` entrypoint of every
# pod (an exec each), which the floor does not.
#
# Prints the seconds of each, the milliseconds per pod of `rkt gc` at N/4 and at N pods, then
# `RATIO gc_per_pod_n_vs_quarter <x>` (1.0: gc's cost grows linearly with the pods on the
# host; before 2026-12-04 it was quadratic: 400 pods 6.2 s, 1000 pods 33.5 s) and last
# `RATIO gc_vs_umount_rm <rkt/floor>` at N pods.
#
# Inputs (env): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI (build/stage1-ns.aci), HELLO_BIN
# (build/bin/hello), MKACI (build/bin/mkaci), N (pods, default 400), BENCH_FS (as run-ns.sh).
# Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-400} bench_ns_inputs gc
[ "$(id -u)" = 0 ] || { echo "gc: needs root" >&2; exit 1; }

bench_ns_workdir gc

R=("$rkt" --dir="$dir" --insecure-options=image)
bench_hello_image
make_pods() { # COUNT: that many exited hello pods
  local i
  for i in $(seq 1 "$1"); do
    "${R[@]}" run --stage1-path="$stage1" --net=none example.com/bench-hello >/dev/null 2>&1
  done
}
now_ns() { date +%s%N; }
secs_since() { # T0 (now_ns): prints the seconds since T0
  awk -v d=$(($(now_ns) - $1)) 'BEGIN { printf "%.3f", d / 1e9 }'
}
gc_s() { # prints the seconds `rkt gc` of every exited pod took
  local t0
  t0=$(now_ns)
  "${R[@]}" gc --grace-period=0s >/dev/null 2>&1
  secs_since "$t0"
}
left() { find "$dir/pods" -mindepth 2 -maxdepth 2 | wc -l; }

quarter=$((n / 4))
[ "$quarter" -ge 1 ] || quarter=1
make_pods "$quarter"
tq=$(gc_s)
[ "$(left)" = 0 ] || { echo "gc: $(left) pods left after rkt gc" >&2; exit 1; }
make_pods "$n"
mounts=$(grep -c " $dir/pods/" /proc/self/mountinfo || true)
tn=$(gc_s)
[ "$(left)" = 0 ] || { echo "gc: $(left) pods left after rkt gc" >&2; exit 1; }

make_pods "$n"
t0=$(now_ns)
python3 - "$dir/pods/" <<'PY'
import ctypes, os, shutil, sys
pods = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
mounts = [l.split(" ")[4] for l in open("/proc/self/mountinfo")]
for m in sorted((m for m in mounts if m.startswith(pods)), key=lambda m: -m.count("/")):
    libc.umount2(m.encode(), 2)  # MNT_DETACH
for state in os.listdir(pods):
    for pod in os.listdir(pods + state):
        shutil.rmtree(pods + state + "/" + pod)
PY
tf=$(secs_since "$t0")

printf 'rkt gc of %d pods (%d mounts): %s s; of %d pods: %s s\n' "$n" "$mounts" "$tn" "$quarter" "$tq"
printf 'floor (python3: one mountinfo read, umount2, rmtree) of %d pods: %s s\n' "$n" "$tf"
awk -v a="$tn" -v n="$n" -v b="$tq" -v q="$quarter" 'BEGIN {
  printf "per pod: %.2f ms at %d pods, %.2f ms at %d\n", 1000 * a / n, n, 1000 * b / q, q
  printf "RATIO gc_per_pod_n_vs_quarter %.2f\n", (a / n) / (b / q) }'
echo "RATIO gc_vs_umount_rm $(awk -v a="$tn" -v b="$tf" 'BEGIN { printf "%.2f", a / b }')"
