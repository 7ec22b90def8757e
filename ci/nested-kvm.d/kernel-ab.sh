#!/bin/bash
# kernel-ab.sh ROUNDS NAME=VMLINUX:STAGE1_KVM_ACI...   (run it under ci/nested-kvm)
#
# Compares guest kernels in one L1, the way docs/vmm.md reports them:
#  1. the exit profile of a quiet `stage1-vmm boot` to the test init (`rkt_test=quick`,
#     bench/boot.sh's command line, RKT_VMM_EXIT_STATS=1) and of a hello pod (`rkt run
#     --stage1=kvm` with a stage1-kvm image that ships the kernel), once per kernel;
#  2. ROUNDS rounds, kernels alternating within each round, of `bench/boot.sh 2`
#     (stage1-vmm vs QEMU microvm on the same kernel) and `bench/run-kvm.sh 2` (BENCH_SIZES=0);
#     AB_RUN_KVM=0 leaves run-kvm.sh out.
# Prints every bench's summary lines prefixed with the kernel's NAME. Prepare on the host first:
# bash ci/build.sh, then bench/boot.sh and bench/run-kvm.sh once (they build the initramfs
# maker and the bench images), and a stage1-kvm image per kernel (KERNEL=... ci/mkstage1.sh).
set -euo pipefail
rounds=${1:?usage: kernel-ab.sh ROUNDS NAME=VMLINUX:ACI...}; shift
[ -n "${NESTED_KVM:-}" ] || [ -c /dev/kvm ] || { echo "kernel-ab: no /dev/kvm" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$repo"
vmm=${VMM_BIN:-$repo/target/static/x86_64-unknown-linux-gnu/release/stage1-vmm}
mkinit=${CARGO_TARGET_DIR:-$repo/target}/release/examples/mk_test_initramfs
rkt=$repo/build/bin/rkt
hello=/var/cache/rkt-rs/bench-kvm/hello.aci
work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/kernel-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$mkinit" "$work/initramfs.cpio"
. "$repo/bench/lib.sh"
common="$BENCH_GUEST_CMDLINE rkt_test=quick"

for spec in "$@"; do
    name=${spec%%=*} rest=${spec#*=}
    k=${rest%%:*} aci=${rest#*:}
    echo "== $name: $k ($(stat -c %s "$k") bytes), $aci"
    echo "-- $name: exit profile, quiet stage1-vmm boot"
    RKT_VMM_EXIT_STATS=1 "$vmm" boot --kernel "$k" --initramfs "$work/initramfs.cpio" --mem 256 \
        --cpus 1 --no-stdin --replace-cmdline --cmdline "$common reboot=k" --timeout 120 \
        >"$work/boot.out" 2>"$work/boot.err" || echo "$name: boot failed ($?)"
    grep -c RKT-TEST-INIT-MARKER "$work/boot.out" | sed "s/^/$name: markers: /"
    sed "s/^/$name: /" "$work/boot.err"
    echo "-- $name: exit profile, hello pod"
    d=$work/rkt-$name
    RKT_VMM_EXIT_STATS=1 "$rkt" --dir="$d" --insecure-options=image run --stage1-path="$aci" \
        "$hello" >"$work/pod.out" 2>"$work/pod.err" || echo "$name: pod failed ($?)"
    grep -h "Hello" "$work/pod.out" | head -n 1 | sed "s/^/$name: /"
    grep "exits" "$work/pod.err" | sed "s/^/$name: /"
    "$rkt" --dir="$d" gc --grace-period=0s >/dev/null 2>&1 || true
    rm -rf "$d"
done

for r in $(seq 1 "$rounds"); do
    for spec in "$@"; do
        name=${spec%%=*} rest=${spec#*=}
        k=${rest%%:*} aci=${rest#*:}
        echo "-- round $r: $name: bench/boot.sh 2"
        RKT_TEST_KERNEL=$k VMM_BIN=$vmm bash bench/boot.sh 2 2>&1 | grep -v "^bench: [0-9]" |
            sed "s/^/$name boot r$r: /"
        [ "${AB_RUN_KVM:-1}" = 1 ] || continue
        echo "-- round $r: $name: bench/run-kvm.sh 2"
        RKT_TEST_KERNEL=$k RKT_STAGE1_KVM_ACI=$aci BENCH_SIZES=0 bash bench/run-kvm.sh 2 2>&1 |
            grep -E "run [0-9]|median|RATIO" | sed "s/^/$name run-kvm r$r: /"
    done
done
