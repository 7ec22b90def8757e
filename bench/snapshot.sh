#!/bin/bash
# bench/snapshot.sh [RUNS]
#
# Snapshot-start benchmark: restoring a VM from a snapshot (`stage1-vmm boot --restore`)
# against cold-booting it to the same point. The guest is the test initramfs's init in
# `rkt_test=snapshot` mode (stage1-vmm/tests/guest/init.rs): it asks for a snapshot on the
# snapshot port, then reads the port's status. Booted cold (no --snapshot-out) it goes on at
# once and prints `SNAPSHOT-COLD`; restored, it reads the fresh entropy and clock, applies them
# and prints `RESTORED`. Both lines come right after the same port read, so "start to that
# line" is the same point of the guest program. One snapshot is made first (--snapshot-out),
# then runs alternate (default 10 each). Reports the medians of start->line and start->exit and
# of the VMM's max RSS; the last line is
# `RATIO snapshot_vs_cold <restore/cold of the start->line medians>` (issue 15 expects <= 0.4).
#
# Needs a KVM that boots Linux; elsewhere it prepares on the host and re-runs itself under
# ci/nested-kvm, as bench/boot.sh does. Environment: as bench/boot.sh (VMM_BIN,
# CARGO_TARGET_DIR, RKT_TEST_KERNEL, BENCH_MEM default 256).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
runs=${1:-10}
tgt=${CARGO_TARGET_DIR:-$repo/target}
mkinit=$tgt/release/examples/mk_test_initramfs
kernel=${RKT_TEST_KERNEL:-$repo/build/kernel/vmlinux}
mem=${BENCH_MEM:-256}
prepare() {
    local need=()
    [ -x /usr/bin/time ] || need+=(time)
    bench_apt_install "${need[@]}"
    [ -s "$kernel" ] || "$repo/kernel-config/build.sh" >&2
    bench_initramfs_maker
    bench_vmm
}

if [ -z "${NESTED_KVM:-}" ]; then
    prepare
    bench_reexec_nested VMM_BIN="$VMM" -- "$@"
fi
[ -n "${VMM:-}" ] || bench_vmm
vmm=$VMM
for f in "$vmm" "$mkinit" "$kernel" /usr/bin/time; do
    [ -e "$f" ] || { bench_log "missing $f (run bench/snapshot.sh on the host first to prepare)"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-snapshot.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$mkinit" "$work/initramfs.cpio"

# bench/boot.sh's quiet command line, with the test init's snapshot mode.
cmdline="$BENCH_GUEST_CMDLINE reboot=k rkt_test=snapshot"
boot=("$vmm" boot --kernel "$kernel" --initramfs "$work/initramfs.cpio"
    --mem "$mem" --no-stdin --replace-cmdline --cmdline "$cmdline" --timeout 120)
snap=$work/snap

t0=$EPOCHREALTIME
"${boot[@]}" --snapshot-out "$snap" >"$work/make.out" 2>"$work/make.err" ||
    { bench_log "making the snapshot failed:"; tail -n 20 "$work/make.out" "$work/make.err" >&2; exit 1; }
make_ms=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", (b-a)*1000}')
grep -q SNAPSHOT-POINT "$work/make.out" || { bench_log "no SNAPSHOT-POINT in the snapshot run"; exit 1; }
snap_mem_kb=$(du -k "$snap/memory" | cut -f1)
bench_log "snapshot made in $make_ms ms (memory file: $snap_mem_kb KiB on disk of $mem MiB)"

: >"$work/restore.tsv"; : >"$work/cold.tsv"
bench_log "$runs runs each, alternating; mem ${mem} MiB, 1 vCPU"
for i in $(seq 1 "$runs"); do
    r=$(bench_timed_run restore RESTORED "$vmm" boot --restore "$snap" --no-stdin --timeout 120)
    echo "$r" >>"$work/restore.tsv"
    set -- $r; [ "$4" = 0 ] && [ "$1" != NA ] || { bench_log "restore run $i failed (status $4):"; tail -n 5 "$work/restore.out" "$work/restore.err" >&2; }
    c=$(bench_timed_run cold SNAPSHOT-COLD "${boot[@]}")
    echo "$c" >>"$work/cold.tsv"
    set -- $c; [ "$4" = 0 ] && [ "$1" != NA ] || { bench_log "cold run $i failed (status $4):"; tail -n 5 "$work/cold.out" "$work/cold.err" >&2; }
    bench_log "run $i: restore line=${r%% *} ms exit=$(echo "$r" | cut -d' ' -f2) ms | cold line=${c%% *} ms exit=$(echo "$c" | cut -d' ' -f2) ms"
done

report() {
    local name=$1 f=$2
    printf '%-8s start->line %8s ms   start->exit %8s ms   max RSS %8s KiB\n' "$name" \
        "$(awk '$1!="NA"{print $1}' "$f" | bench_median)" "$(awk '{print $2}' "$f" | bench_median)" \
        "$(awk '{print $3}' "$f" | bench_median)"
}
echo "snapshot benchmark: $runs runs each, kernel $(basename "$kernel"), ${mem} MiB, 1 vCPU$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
echo "snapshot made in $make_ms ms; memory file $snap_mem_kb KiB on disk"
report restore "$work/restore.tsv"
report cold "$work/cold.tsv"
failed=$(cat "$work/restore.tsv" "$work/cold.tsv" | awk '$1=="NA" || $4!=0' | wc -l)
[ "$failed" = 0 ] || { bench_log "$failed runs failed"; exit 1; }
restore_line=$(awk '{print $1}' "$work/restore.tsv" | bench_median)
cold_line=$(awk '{print $1}' "$work/cold.tsv" | bench_median)

# Restore-to-app: `rkt run --stage1=kvm` of the hello image with --kvm-snapshot against the same
# pod booted cold, from the start to the app's first line (and to exit), after one warm-up run
# that makes the snapshot; alternating, medians; `RATIO snapshot_run_vs_cold` compares the
# start->line medians (issue 15 expects <= 0.4). Snapshot pods need --net=none and one vCPU (--cpu=1); the
# cold pod gets the same. Inputs (env, defaults from `make build`): RKT_BIN (build/bin/rkt),
# RKT_STAGE1_KVM_ACI (build/stage1-kvm.aci), HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci).
rkt=${RKT_BIN:-$repo/build/bin/rkt}
stage1=${RKT_STAGE1_KVM_ACI:-$repo/build/stage1-kvm.aci}
for f in "$rkt" "$stage1" "${HELLO_BIN:-$repo/build/bin/hello}" "${MKACI:-$repo/build/bin/mkaci}"; do
    [ -e "$f" ] || { bench_log "missing $f (run make build)"; exit 1; }
done
pods=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/bench-snapshot-pods.XXXXXX")
trap '"$rkt" --dir="$pods/data" gc --grace-period=0s >/dev/null 2>&1 || true; rm -rf "$work" "$pods"' EXIT
"${MKACI:-$repo/build/bin/mkaci}" --name example.com/bench-hello --label os=linux --label arch=amd64 \
    --exec /bin/hello --file "${HELLO_BIN:-$repo/build/bin/hello}:/bin/hello:0755" -o "$pods/hello.aci"
R=("$rkt" --dir="$pods/data" --insecure-options=image)
# A pod that stalls (nested TCG, docs/virtio.md) fails its run instead of hanging the bench.
T=(timeout --kill-after=10 "${BENCH_POD_TIMEOUT:-180}")
hello_id=$("${R[@]}" fetch "$pods/hello.aci" 2>/dev/null | tail -n 1)
[ -n "$hello_id" ] || { bench_log "cannot import the hello image"; exit 1; }
pod=(run --stage1-path="$stage1" --net=none "$hello_id" --cpu=1)
bench_log "pods: warm-up (imports stage1, makes the snapshot)"
w=$(bench_timed_run warm "Hello from" "${T[@]}" "${R[@]}" --debug run --kvm-snapshot --stage1-path="$stage1" --net=none "$hello_id" --cpu=1)
grep -q -- "--kvm-snapshot: made snapshot" "$work/warm.err" ||
    { bench_log "the warm-up made no snapshot:"; tail -n 20 "$work/warm.err" >&2; exit 1; }
bench_log "warm-up (snapshot made): $(echo "$w" | cut -d' ' -f2) ms to exit"
: >"$work/podsnap.tsv"; : >"$work/podcold.tsv"
for i in $(seq 1 "$runs"); do
    r=$(bench_timed_run podsnap "Hello from" "${T[@]}" "${R[@]}" "${pod[0]}" --kvm-snapshot "${pod[@]:1}")
    echo "$r" >>"$work/podsnap.tsv"
    set -- $r; [ "$4" = 0 ] && [ "$1" != NA ] || { bench_log "snapshot pod $i failed (status $4):"; tail -n 5 "$work/podsnap.err" >&2; }
    c=$(bench_timed_run podcold "Hello from" "${T[@]}" "${R[@]}" "${pod[@]}")
    echo "$c" >>"$work/podcold.tsv"
    set -- $c; [ "$4" = 0 ] && [ "$1" != NA ] || { bench_log "cold pod $i failed (status $4):"; tail -n 5 "$work/podcold.err" >&2; }
    bench_log "pod run $i: snapshot line=${r%% *} ms exit=$(echo "$r" | cut -d' ' -f2) ms | cold line=${c%% *} ms exit=$(echo "$c" | cut -d' ' -f2) ms"
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
done
echo "rkt run --stage1=kvm hello (--net=none --cpu=1), $runs runs each (line: the app's first line):"
report snapshot "$work/podsnap.tsv"
report cold "$work/podcold.tsv"
failed=$(cat "$work/podsnap.tsv" "$work/podcold.tsv" | awk '$1=="NA" || $4!=0' | wc -l)
[ "$failed" = 0 ] || { bench_log "$failed pod runs failed"; exit 1; }
snap_run=$(awk '{print $1}' "$work/podsnap.tsv" | bench_median)
cold_run=$(awk '{print $1}' "$work/podcold.tsv" | bench_median)

echo "RATIO snapshot_vs_cold $(awk -v a="$restore_line" -v b="$cold_line" 'BEGIN{printf "%.2f", a/b}')"
echo "RATIO snapshot_run_vs_cold $(awk -v a="$snap_run" -v b="$cold_run" 'BEGIN{printf "%.2f", a/b}')"
