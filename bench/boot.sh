#!/bin/bash
# bench/boot.sh [RUNS]
#
# Boot-time benchmark: our VMM (`stage1-vmm boot`) against
# `qemu-system-x86_64 -M microvm -enable-kvm`, same vmlinux, same initramfs
# (a static init that prints a marker and reboots at once), same quiet
# command line, runs alternating (default 10 each). Reports, per VMM, the
# median time from start to the init marker on the console and from start
# to process exit, and the median max RSS of the VMM process; the last line
# is `RATIO boot_vs_qemu_microvm <ours/qemu of the start->exit medians>`.
#
# Needs a KVM that boots Linux. On a host whose KVM cannot (PVM), run it
# under the harness: `ci/nested-kvm bench/boot.sh`; run plainly on such a
# host, it prepares everything (release build, initramfs, packages) and then
# re-runs itself under ci/nested-kvm. Inside L1 the root is read-only, so
# preparation happens on the host first.
#
# Environment: VMM_BIN (default: the static release build of stage1-vmm, as the stage1-kvm
# image ships it; bench/lib.sh), CARGO_TARGET_DIR (where the release builds are; default
# <repo>/target), RKT_TEST_KERNEL (default <repo>/build/kernel/vmlinux),
# BENCH_MEM (MiB, default 256), BENCH_CPUS (default 1).
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
cpus=${BENCH_CPUS:-1}
prepare() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
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
# Same guest CPU features on both sides, the TSC-deadline timer included (bench/lib.sh).
bench_lapic_timer deadline
vmm=$VMM
for f in "$vmm" "$mkinit" "$kernel" /usr/bin/time; do
    [ -e "$f" ] || { bench_log "missing $f (run bench/boot.sh on the host first to prepare)"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$mkinit" "$work/initramfs.cpio"

marker=RKT-TEST-INIT-MARKER
# The same quiet command line for both: stage1-vmm's default line (boot/cmdline.rs) plus the
# test init's mode; only the reboot method differs.
common="$BENCH_GUEST_CMDLINE rkt_test=quick"
# CPU: the host's, without VMX/SVM, as stage1-vmm gives its guests (otherwise a guest kernel
# with KVM built in spends ~0.4 s setting up nested virtualization).
qemu_cpu=host,-svm,-vmx$BENCH_QEMU_TIMER
# reboot: ours ends on the i8042 reset (reboot=k); microvm has no i8042, so QEMU ends on a
# triple fault (reboot=t) with -no-reboot, its fastest way out.
ours=("$vmm" boot --kernel "$kernel" --initramfs "$work/initramfs.cpio" --mem "$mem" --cpus "$cpus"
    --no-stdin --replace-cmdline --cmdline "$common reboot=k" --timeout 120)
qemu=(qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off
    -enable-kvm -cpu "$qemu_cpu" -m "$mem" -smp "$cpus" -nodefaults -no-user-config -nographic -no-reboot
    -serial stdio -kernel "$kernel" -initrd "$work/initramfs.cpio" -append "$common reboot=t")

: >"$work/ours.tsv"; : >"$work/qemu.tsv"
bench_log "$runs runs each, alternating; mem ${mem} MiB, ${cpus} vCPU(s)"
for i in $(seq 1 "$runs"); do
    r=$(bench_timed_run ours "$marker" "${ours[@]}"); echo "$r" >>"$work/ours.tsv"
    set -- $r; [ "$4" = 0 ] && [ "$1" != NA ] || { bench_log "ours run $i failed (status $4):"; tail -n 5 "$work/ours.out" "$work/ours.err" >&2; }
    q=$(bench_timed_run qemu "$marker" "${qemu[@]}"); echo "$q" >>"$work/qemu.tsv"
    set -- $q; [ "$1" != NA ] || { bench_log "qemu run $i: no marker (status $4):"; tail -n 5 "$work/qemu.out" "$work/qemu.err" >&2; }
    bench_log "run $i: ours marker=${r%% *} ms exit=$(echo "$r" | cut -d' ' -f2) ms | qemu marker=${q%% *} ms exit=$(echo "$q" | cut -d' ' -f2) ms"
done

report() {
    local name=$1 f=$2
    local mark exit rss
    mark=$(awk '$1!="NA"{print $1}' "$f" | bench_median)
    exit=$(awk '{print $2}' "$f" | bench_median)
    rss=$(awk '{print $3}' "$f" | bench_median)
    printf '%-14s start->marker %8s ms   start->exit %8s ms   max RSS %8s KiB\n' "$name" "$mark" "$exit" "$rss"
}
echo "boot benchmark: $runs runs each, kernel $(basename "$kernel"), ${mem} MiB, ${cpus} vCPU(s)$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
report stage1-vmm "$work/ours.tsv"
report qemu-microvm "$work/qemu.tsv"
ours_exit=$(awk '{print $2}' "$work/ours.tsv" | bench_median)
qemu_exit=$(awk '{print $2}' "$work/qemu.tsv" | bench_median)
# Each pair of runs is adjacent in time, so their ratio is less sensitive to the machine's
# load drifting during the benchmark than the ratio of the medians.
paired=$(paste -d' ' "$work/ours.tsv" "$work/qemu.tsv" | awk '{printf "%.3f\n", $2/$6}' | bench_median)
echo "paired start->exit ratio (median of per-pair ratios): $paired"
echo "RATIO boot_vs_qemu_microvm $(awk -v a="$ours_exit" -v b="$qemu_exit" 'BEGIN{printf "%.2f", a/b}')"
