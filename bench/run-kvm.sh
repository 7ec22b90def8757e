#!/bin/bash
# bench/run-kvm.sh [RUNS]
#
# Start-to-exit latency of a KVM pod: `rkt run --stage1=kvm` of the hello image against a bare
# `qemu-system-x86_64 -M microvm -enable-kvm` boot of the same vmlinux with an initramfs whose
# static init prints a line and reboots at once, same quiet command line (acpi=off), runs
# alternating (default 10 each); medians. Then the same pod with a 1 GiB image against a 1 MiB
# image (overlays, nothing copied per run: the two must be within 10%). The hello pod also runs
# with the VMM's seccomp filters off (RKT_VMM_SECCOMP=0, the debugging knob; it prints a
# warning) in the same alternation, for `RATIO seccomp_on_vs_off` (expected <= 1.03). The last
# line is `RATIO run_kvm_vs_qemu_boot <rkt run median / qemu boot median>`.
#
# Run it plainly: on a host whose KVM cannot boot Linux it prepares everything on the host, where
# it is fast, then re-runs itself under ci/nested-kvm with 6 GiB for L1. By hand after a plain
# run has prepared: `NESTED_KVM_MEM=6144 ci/nested-kvm bash bench/run-kvm.sh` (L1's default
# 3 GiB is too small for the 1 GiB image's store copy plus its tree). Inputs (env, defaults from `make build`): RKT_BIN (build/bin/rkt),
# RKT_STAGE1_KVM_ACI (build/stage1-kvm.aci), HELLO_BIN (build/bin/hello), MKACI
# (build/bin/mkaci), RKT_TEST_KERNEL (build/kernel/vmlinux), CARGO_TARGET_DIR (for the
# initramfs maker, default <repo>/target), RKT_BENCH_CACHE (prepared images,
# default /var/cache/rkt-rs/bench-kvm), BENCH_QEMU_MEM (MiB, default: what the pod VM gets),
# BENCH_SIZES (0: skip the 1 MiB / 1 GiB comparison, e.g. to measure only the filters),
# NET (the pod's --net, default none: the VM gets no network card, as the bare QEMU boot;
# NET=default adds rkt's CNI ptp network, whose plugin and iptables execs take ~2.3 s under the
# harness's emulation, and names the ratio run_kvm_default_net_vs_qemu_boot).
# Both guests get the TSC-deadline timer (BENCH_LAPIC_TIMER, bench/lib.sh): under ci/nested-kvm
# pods otherwise get the LAPIC's one-shot timer and its boot-time calibration (docs/nested-kvm.md,
# "L2 timers").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
bench_lapic_timer deadline
runs=${1:-10}
rkt=${RKT_BIN:-$repo/build/bin/rkt}
stage1=${RKT_STAGE1_KVM_ACI:-$repo/build/stage1-kvm.aci}
hello=${HELLO_BIN:-$repo/build/bin/hello}
mkaci=${MKACI:-$repo/build/bin/mkaci}
kernel=${RKT_TEST_KERNEL:-$repo/build/kernel/vmlinux}
tgt=${CARGO_TARGET_DIR:-$repo/target}
mkinit=$tgt/release/examples/mk_test_initramfs
cache=${RKT_BENCH_CACHE:-/var/cache/rkt-rs/bench-kvm}
# The hello pod's VM: one app without a memory limit = 128 MiB + the measured guest overhead
# (stage1-vmm/src/pod/sizing.rs); QEMU gets the same.
qemu_mem=${BENCH_QEMU_MEM:-164}
sizes=${BENCH_SIZES:-1}
net=${NET:-none}
prepare() {
    command -v qemu-system-x86_64 >/dev/null || bench_apt_install qemu-system-x86
    for f in "$rkt" "$stage1" "$hello" "$mkaci" "$kernel"; do
        [ -e "$f" ] || { bench_log "missing $f (run make build)"; exit 1; }
    done
    [ -x "$mkinit" ] || bench_initramfs_maker
    mkdir -p "$cache"
    [ -s "$cache/initramfs.cpio" ] || "$mkinit" "$cache/initramfs.cpio"
    [ -s "$cache/hello.aci" ] || "$mkaci" --name example.com/bench-hello --label os=linux --label arch=amd64 \
        --exec /bin/hello --file "$hello:/bin/hello:0755" -o "$cache/hello.aci"
    local size
    [ "$sizes" = 0 ] && return 0
    for size in 1M 1G; do bench_sized_aci "$size" "$cache/big-$size.aci" "$hello" "$mkaci"; done
}

if [ -z "${NESTED_KVM:-}" ]; then
    prepare
    bench_reexec_nested NESTED_KVM_MEM="${NESTED_KVM_MEM:-6144}" -- "$@"
fi
need=("$rkt" "$stage1" "$kernel" "$cache/initramfs.cpio" "$cache/hello.aci")
[ "$sizes" = 0 ] || need+=("$cache/big-1M.aci" "$cache/big-1G.aci")
for f in "${need[@]}"; do
    [ -e "$f" ] || { bench_log "missing $f (run bash bench/run-kvm.sh on the host first to prepare)"; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { bench_log "qemu-system-x86_64 missing"; exit 1; }

work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/bench-run-kvm.XXXXXX")
dir=$work/data
# Inside L1 the store's copy of the 1 GiB image and its 1 GiB tree do not fit in
# $NESTED_KVM_TMP beside the rest (each tmpfs is half of L1's RAM; the re-run asks for 6 GiB):
# use the separate fresh tmpfs at /var/lib/rkt.
[ -n "${NESTED_KVM:-}" ] && dir=/var/lib/rkt/bench-run-kvm
cleanup() {
    "$rkt" --dir="$dir" gc --grace-period=0s >/dev/null 2>&1 || true
    rm -rf "$work"
    [ -n "${NESTED_KVM:-}" ] && rm -rf "$dir"
}
trap cleanup EXIT
R=("$rkt" --dir="$dir" --insecure-options=image)
N=(--net="$net")

# Import once; runs name images by ID, so no run re-hashes an image file.
id_of() { "${R[@]}" fetch "$1" 2>/dev/null | tail -n 1; }
bench_log "importing images (the 1 GiB one takes a while under emulation)"
hello_id=$(id_of "$cache/hello.aci")
"${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$hello_id" >/dev/null 2>&1 || true   # imports stage1
if [ "$sizes" != 0 ]; then
    small_id=$(id_of "$cache/big-1M.aci")
    big_id=$(id_of "$cache/big-1G.aci")
    "${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$big_id" >/dev/null 2>&1 || true # renders its tree
fi

# The pod's kernel command line (stage1-vmm's default, bench/lib.sh) with the test init's mode.
cmdline="$BENCH_GUEST_CMDLINE rkt_test=quick"
# microvm has no i8042: QEMU ends on a triple fault (reboot=t) with -no-reboot.
qemu=(qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off
    -enable-kvm -cpu "host$BENCH_QEMU_TIMER" -m "$qemu_mem" -smp 1 -nodefaults -no-user-config -nographic -no-reboot
    -serial stdio -kernel "$kernel" -initrd "$cache/initramfs.cpio" -append "$cmdline reboot=t")

# ms CMD...: runs CMD, prints its wall time (ms) and status; output to $work/last.*
ms() {
    local t0 t1 st=0
    t0=$EPOCHREALTIME
    "$@" </dev/null >"$work/last.out" 2>"$work/last.err" || st=$?
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" -v s="$st" 'BEGIN{printf "%.1f %d\n", (b-a)*1000, s}'
}
check() { # NAME RESULT: complain about a failed run
    set -- "$1" $2
    [ "$3" = 0 ] || { bench_log "$1 failed (status $3):"; tail -n 5 "$work/last.out" "$work/last.err" >&2; }
}

: >"$work/rkt.ms"; : >"$work/qemu.ms"; : >"$work/nofilter.ms"; : >"$work/onoff.ratio"
bench_log "$runs runs each, alternating: rkt run --stage1=kvm hello | same, seccomp off | qemu microvm boot"
# on_run / off_run: one hello run with the filters on / off (the order alternates per round,
# so neither always runs first after the previous round's gc).
on_run() {
    r=$(ms "${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$hello_id"); check "rkt run $i" "$r"
    grep -q "Hello from a rkt-rs pod" "$work/last.out" || bench_log "rkt run $i: no greeting"
    echo "${r% *}" >>"$work/rkt.ms"
}
off_run() {
    n=$(ms env RKT_VMM_SECCOMP=0 "${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$hello_id"); check "rkt run (no seccomp) $i" "$n"
    grep -q "WITHOUT seccomp" "$work/last.err" || bench_log "rkt run (no seccomp) $i: no warning"
    echo "${n% *}" >>"$work/nofilter.ms"
}
for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then on_run; off_run; else off_run; on_run; fi
    awk -v a="${r% *}" -v b="${n% *}" 'BEGIN{printf "%.4f\n", a/b}' >>"$work/onoff.ratio"
    q=$(ms "${qemu[@]}"); echo "${q% *}" >>"$work/qemu.ms"
    grep -q RKT-TEST-INIT-MARKER "$work/last.out" || bench_log "qemu run $i: no init marker"
    bench_log "run $i: rkt ${r% *} ms | rkt, seccomp off ${n% *} ms | qemu ${q% *} ms"
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
done

: >"$work/small.ms"; : >"$work/big.ms"
size_runs=$(( (runs + 1) / 2 )); [ "$size_runs" -ge 3 ] || size_runs=3
[ "$sizes" = 0 ] && size_runs=0
[ "$size_runs" = 0 ] || bench_log "$size_runs runs each, alternating: 1 MiB image | 1 GiB image"
for i in $(seq 1 "$size_runs"); do
    s=$(ms "${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$small_id"); check "1M run $i" "$s"; echo "${s% *}" >>"$work/small.ms"
    b=$(ms "${R[@]}" run "${N[@]}" --stage1-path="$stage1" "$big_id"); check "1G run $i" "$b"; echo "${b% *}" >>"$work/big.ms"
    bench_log "run $i: 1 MiB ${s% *} ms | 1 GiB ${b% *} ms"
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
done

rkt_med=$(bench_median %.6g <"$work/rkt.ms"); qemu_med=$(bench_median %.6g <"$work/qemu.ms"); nof_med=$(bench_median %.6g <"$work/nofilter.ms")
small_med=$(bench_median %.6g <"$work/small.ms"); big_med=$(bench_median %.6g <"$work/big.ms")
echo "run-kvm benchmark: $runs runs each, --net=$net$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
printf '%-34s median %9s ms\n' "rkt run --stage1=kvm hello" "$rkt_med" "same, RKT_VMM_SECCOMP=0" "$nof_med" \
    "qemu microvm boot (${qemu_mem} MiB)" "$qemu_med" \
    "rkt run, 1 MiB image" "$small_med" "rkt run, 1 GiB image" "$big_med"
echo "RATIO seccomp_on_vs_off $(awk -v a="$rkt_med" -v b="$nof_med" 'BEGIN{printf "%.3f", a/b}') (median of the per-pair ratios: $(bench_median %.6g <"$work/onoff.ratio"))"
[ "$sizes" = 0 ] || echo "RATIO image_1g_vs_1m $(awk -v a="$big_med" -v b="$small_med" 'BEGIN{printf "%.2f", a/b}')"
name=$(bench_net_ratio run_kvm qemu_boot "$net")
echo "RATIO $name $(awk -v a="$rkt_med" -v b="$qemu_med" 'BEGIN{printf "%.2f", a/b}')"
