#!/bin/bash
# bench/enter.sh [RUNS]
#
# `rkt enter UUID CMD` latency in a kvm pod (guest-init's exec service over vsock) against the
# same in an ns pod (setns), inside one L1: one pod per flavor, a static pod-check app sleeping;
# CMD is `/bin/pod-check --no-check` (the test images have no /bin/true; pod-check without
# checks does nothing and exits 0). RUNS enters per flavor (default 20), alternating; medians.
# Then the throughput of `cat` through enter: 64 MiB in and back out (pod-check --cat) once per
# flavor. The last line is `RATIO enter_kvm_vs_ns <kvm median / ns median>` (expected <= 3).
#
# Run it plainly: on a host whose KVM cannot boot Linux it re-runs itself under ci/nested-kvm.
# Inputs (env, defaults from `make build`): RKT_BIN (build/bin/rkt), RKT_STAGE1_KVM_ACI
# (build/stage1-kvm.aci), RKT_STAGE1_NS_ACI (build/stage1-ns.aci), POD_CHECK_BIN
# (build/bin/pod-check), MKACI (build/bin/mkaci).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
runs=${1:-20}
rkt=${RKT_BIN:-$repo/build/bin/rkt}
kvm=${RKT_STAGE1_KVM_ACI:-$repo/build/stage1-kvm.aci}
ns=${RKT_STAGE1_NS_ACI:-$repo/build/stage1-ns.aci}
check=${POD_CHECK_BIN:-$repo/build/bin/pod-check}
mkaci=${MKACI:-$repo/build/bin/mkaci}

for f in "$rkt" "$kvm" "$ns" "$check" "$mkaci"; do
    [ -e "$f" ] || { bench_log "missing $f (run make build)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { bench_log "needs root"; exit 1; }
bench_reexec_nested -- "$@"

work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/bench-enter.XXXXXX")
dir=$work/data
R=("$rkt" --dir="$dir" --insecure-options=image)
pids=()
cleanup() {
    for u in "${uuids[@]:-}"; do [ -n "$u" ] && "${R[@]}" stop --force "$u" >/dev/null 2>&1 || true; done
    for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
uuids=()

"$mkaci" --name example.com/bench-enter --label os=linux --label arch=amd64 \
    --exec /bin/pod-check --file "$check:/bin/pod-check:0755" -o "$work/app.aci"

# start FLAVOR STAGE1: a sleeping pod; sets $uuid.
start() {
    "${R[@]}" run --stage1-path="$2" --net=none --uuid-file-save="$work/$1.uuid" "$work/app.aci" \
        -- --no-check --sleep-ms=3600000 </dev/null >"$work/$1.out" 2>"$work/$1.err" &
    pids+=($!)
    local t=0
    until [ -s "$work/$1.uuid" ] && "${R[@]}" enter "$(cat "$work/$1.uuid")" /bin/pod-check --no-check \
        </dev/null >/dev/null 2>&1; do
        sleep 0.5; t=$((t + 1))
        [ "$t" -lt 600 ] || { bench_log "the $1 pod did not come up"; tail -n 5 "$work/$1.err" >&2; exit 1; }
    done
    uuid=$(cat "$work/$1.uuid"); uuids+=("$uuid")
}
bench_log "starting an ns pod and a kvm pod"
start ns "$ns"; ns_uuid=$uuid
start kvm "$kvm"; kvm_uuid=$uuid

ms() { # ms CMD...: wall time of CMD in ms
    local t0 t1 st=0
    t0=$EPOCHREALTIME
    "$@" </dev/null >/dev/null 2>"$work/last.err" || st=$?
    t1=$EPOCHREALTIME
    [ "$st" = 0 ] || { bench_log "failed ($st): $*"; tail -n 3 "$work/last.err" >&2; }
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", (b-a)*1000}'
}
: >"$work/ns.ms"; : >"$work/kvm.ms"
bench_log "$runs enters each, alternating"
for _ in $(seq 1 "$runs"); do
    ms "${R[@]}" enter "$ns_uuid" /bin/pod-check --no-check >>"$work/ns.ms"
    ms "${R[@]}" enter "$kvm_uuid" /bin/pod-check --no-check >>"$work/kvm.ms"
done

head -c $((64 << 20)) /dev/urandom >"$work/blob"
want=$(sha256sum <"$work/blob")
cat_mibs() { # cat_mibs UUID: MiB/s of 64 MiB in and out through enter, checked
    local t0 t1 got
    t0=$EPOCHREALTIME
    got=$("${R[@]}" enter "$1" /bin/pod-check --no-check --cat <"$work/blob" 2>/dev/null | sha256sum)
    t1=$EPOCHREALTIME
    [ "$got" = "$want" ] || bench_log "cat through enter ($1) changed the data"
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", 64/(b-a)}'
}
ns_tp=$(cat_mibs "$ns_uuid"); kvm_tp=$(cat_mibs "$kvm_uuid")

ns_med=$(bench_median %.6g <"$work/ns.ms"); kvm_med=$(bench_median %.6g <"$work/kvm.ms")
echo "enter benchmark: $runs enters per flavor$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
printf '%-40s median %9s ms\n' "rkt enter (ns) pod-check --no-check" "$ns_med" \
    "rkt enter (kvm) pod-check --no-check" "$kvm_med"
printf '%-40s %9s MiB/s each way\n' "cat 64 MiB through enter (ns)" "$ns_tp" \
    "cat 64 MiB through enter (kvm)" "$kvm_tp"
echo "RATIO enter_kvm_vs_ns $(awk -v a="$kvm_med" -v b="$ns_med" 'BEGIN{printf "%.2f", a/b}')"
