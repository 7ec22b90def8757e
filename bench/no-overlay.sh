#!/usr/bin/env bash
# bench/no-overlay.sh [RUNS]
#
# Start-to-exit latency of `rkt run --stage1=ns` of a 1 GiB image with overlay mounts (the
# default: nothing of the image is copied) against `--no-overlay=true` (the image tree is copied
# into the pod: reflinked with FICLONE where the file system shares extents, copied otherwise),
# runs alternating (default 5 each), gc between runs; medians. The image is run-kvm.sh's
# `image_1g` (a static hello plus a 1 GiB file of mostly zeros), built the same way and cached.
# The last line is `RATIO no_overlay_vs_overlay_1g <no-overlay median / overlay median>`.
#
# Inputs (env, defaults from `make build`): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI
# (build/stage1-ns.aci), HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci), RKT_BENCH_CACHE
# (prepared images, default /var/cache/rkt-rs/bench-kvm), BENCH_DIR (the data directory's parent,
# default /var/tmp: its file system decides reflink or copy). Needs root and about 3 GiB free.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
runs=${1:-5}
rkt=${RKT_BIN:-$repo/build/bin/rkt}
stage1=${RKT_STAGE1_NS_ACI:-$repo/build/stage1-ns.aci}
hello=${HELLO_BIN:-$repo/build/bin/hello}
mkaci=${MKACI:-$repo/build/bin/mkaci}
cache=${RKT_BENCH_CACHE:-/var/cache/rkt-rs/bench-kvm}
for f in "$rkt" "$stage1" "$hello" "$mkaci"; do
    [ -e "$f" ] || { bench_log "missing $f (run make build)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { bench_log "needs root"; exit 1; }

mkdir -p "$cache"
img=$cache/big-1G.aci
bench_sized_aci 1G "$img" "$hello" "$mkaci"

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-no-overlay.XXXXXX")
dir=$work/data
cleanup() {
    "$rkt" --dir="$dir" gc --grace-period=0s >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
R=("$rkt" --dir="$dir" --insecure-options=image)
id=$("${R[@]}" fetch "$img" 2>/dev/null | tail -n 1)
# Warm-up: imports stage1 and renders both trees once.
"${R[@]}" run --stage1-path="$stage1" "$id" >/dev/null 2>&1
"${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true

ms() {
    local t0 t1 st=0
    t0=$EPOCHREALTIME
    "$@" </dev/null >"$work/last.out" 2>"$work/last.err" || st=$?
    t1=$EPOCHREALTIME
    [ "$st" = 0 ] || { bench_log "run failed ($st):"; tail -n 5 "$work/last.err" >&2; }
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", (b-a)*1000}'
}
: >"$work/ovl.ms"; : >"$work/copy.ms"
copied=""
for i in $(seq 1 "$runs"); do
    o=$(ms "${R[@]}" run --stage1-path="$stage1" "$id"); echo "$o" >>"$work/ovl.ms"
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
    c=$(ms "${R[@]}" --debug run --no-overlay=true --stage1-path="$stage1" "$id"); echo "$c" >>"$work/copy.ms"
    copied=$(grep -o 'trees copied into the pod: .*' "$work/last.err" || true)
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
    bench_log "run $i: overlay $o ms | --no-overlay $c ms"
done
om=$(bench_median %.6g <"$work/ovl.ms"); cm=$(bench_median %.6g <"$work/copy.ms")
fs=$(stat -f -c %T "$work")
echo "no-overlay benchmark: 1 GiB image, $runs runs each, data dir on $fs"
printf '%-40s median %9s ms\n' "rkt run --stage1=ns (overlay)" "$om" "rkt run --stage1=ns --no-overlay=true" "$cm"
[ -n "$copied" ] && echo "last --no-overlay run: $copied"
echo "RATIO no_overlay_vs_overlay_1g $(awk -v a="$cm" -v b="$om" 'BEGIN{printf "%.2f", a/b}')"
