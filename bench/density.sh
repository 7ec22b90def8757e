#!/bin/bash
# bench/density.sh [PODS]
#
# Density of KVM pods in one host (issue 15, item 4), all inside ONE ci/nested-kvm L1:
#
# 1. Start time: one `rkt run --stage1=kvm --net=$NET --memory=64M` of the hello image alone
#    (median of 3), then PODS (default 10) of them started at once; every one must exit 0 and
#    greet. NET defaults to `none`: this measures the VMs. `NET=default` gives every pod the
#    default network (CNI ptp, host-local, ipMasq): 10 such pods at once failed on CNI's 30 s
#    plugin timeout on 2026-12-01 (each ADD waiting its turn for iptables' lock under TCG) and
#    all succeed since the harness got faster (docs/benchmarks.md).
#    `RATIO density10_vs_single` = (wall time until the last of the PODS ends / PODS) / (one pod
#    alone): the per-pod cost when they share the machine. Scaling: the L1 has NESTED_KVM_CPUS
#    vCPUs (default 1) and a pod's start is CPU-bound under emulation, so PODS pods cannot end
#    sooner than PODS x the serial work / CPUs; dividing by PODS (and multiplying by the CPUs)
#    leaves what concurrency itself costs or saves: 1.0 = no loss, expected <= 1.5. The mean
#    and the slowest of the concurrent pods' own start-to-exit times are printed beside it.
# 2. Memory: PODS pods (pod-check, --memory=64M, --net=none, each sleeping once started) vs PODS
#    `qemu-system-x86_64 -M microvm` guests of the same RAM (the VM size stage1-vmm chooses for
#    a 64 MiB app: 64 + 32 + 64/32 = 98 MiB), the same vmlinux, and a static init that stays
#    up (`rkt_test=hold`), all booted and idle: the sum of the VMMs' RSS
#    (/proc/PID/smaps_rollup) and the drop of L1's MemAvailable, each side. `RATIO
#    density_mem_vs_qemu` = rkt's MemAvailable drop / QEMU's (the VMM, the stage0/stage1
#    processes and the guests' touched RAM, everything it takes to run the pods).
#
# Run it plainly: it prepares on the host (images, the test initramfs, QEMU), then re-runs itself
# under ci/nested-kvm with NESTED_KVM_MEM=4096 (L1's default 3 GiB holds 10 pods, but its tmpfs
# halves leave little room; 4 GiB leaves slack). Inputs (env, defaults from `make build`):
# RKT_BIN, RKT_STAGE1_KVM_ACI, HELLO_BIN, POD_CHECK_BIN, MKACI, RKT_TEST_KERNEL,
# CARGO_TARGET_DIR, RKT_BENCH_CACHE (default /var/cache/rkt-rs/bench-density).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
# Idle guests wait on timers: both get the one-shot LAPIC timer (bench/lib.sh).
bench_lapic_timer oneshot
pods=${1:-10}
net=${NET:-none}
rkt=${RKT_BIN:-$repo/build/bin/rkt}
stage1=${RKT_STAGE1_KVM_ACI:-$repo/build/stage1-kvm.aci}
hello=${HELLO_BIN:-$repo/build/bin/hello}
podcheck=${POD_CHECK_BIN:-$repo/build/bin/pod-check}
mkaci=${MKACI:-$repo/build/bin/mkaci}
kernel=${RKT_TEST_KERNEL:-$repo/build/kernel/vmlinux}
tgt=${CARGO_TARGET_DIR:-$repo/target}
mkinit=$tgt/release/examples/mk_test_initramfs
cache=${RKT_BENCH_CACHE:-/var/cache/rkt-rs/bench-density}
pod_mem=64M
# stage1-vmm/src/pod/sizing.rs: app 64 MiB + GUEST_BASE_MIB 32 + 64 / PER_PAGE_OVERHEAD_DIVISOR.
vm_mib=98
prepare() {
    command -v qemu-system-x86_64 >/dev/null || bench_apt_install qemu-system-x86
    for f in "$rkt" "$stage1" "$hello" "$podcheck" "$mkaci" "$kernel"; do
        [ -e "$f" ] || { bench_log "missing $f (run make build)"; exit 1; }
    done
    # Rebuilt every time (cheap when up to date): the initramfs must have the `hold` mode.
    bench_initramfs_maker
    mkdir -p "$cache"
    "$mkinit" "$cache/initramfs.cpio"
    "$mkaci" --name example.com/density-hello --label os=linux --label arch=amd64 \
        --exec /bin/hello --file "$hello:/bin/hello:0755" -o "$cache/hello.aci"
    "$mkaci" --name example.com/density-sleeper --label os=linux --label arch=amd64 \
        --exec /bin/pod-check --file "$podcheck:/bin/pod-check:0755" -o "$cache/sleeper.aci"
}

if [ -z "${NESTED_KVM:-}" ]; then
    prepare
    bench_reexec_nested NESTED_KVM_MEM="${NESTED_KVM_MEM:-4096}" -- "$@"
fi
for f in "$rkt" "$stage1" "$kernel" "$cache/initramfs.cpio" "$cache/hello.aci" "$cache/sleeper.aci"; do
    [ -e "$f" ] || { bench_log "missing $f (run bash bench/density.sh on the host first to prepare)"; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { bench_log "qemu-system-x86_64 missing"; exit 1; }
cpus=$(nproc)

work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/bench-density.XXXXXX")
dir=$work/data
[ -n "${NESTED_KVM:-}" ] && dir=/var/lib/rkt/bench-density
qemu_pids=()
cleanup() {
    local p
    for p in "${qemu_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "$dir"/pods/run/*/; do
        [ -d "$p" ] && "$rkt" --dir="$dir" stop "$(basename "$p")" >/dev/null 2>&1 || true
    done
    wait 2>/dev/null || true
    "$rkt" --dir="$dir" gc --grace-period=0s >/dev/null 2>&1 || true
    rm -rf "$work"
    [ -n "${NESTED_KVM:-}" ] && rm -rf "$dir"
}
trap cleanup EXIT
R=("$rkt" --dir="$dir" --insecure-options=image)

id_of() { "${R[@]}" fetch "$1" 2>/dev/null | tail -n 1; }
bench_log "importing images"
hello_id=$(id_of "$cache/hello.aci")
sleeper_id=$(id_of "$cache/sleeper.aci")
"${R[@]}" run --net=none --stage1-path="$stage1" "$hello_id" --memory=$pod_mem >/dev/null 2>&1 || true # imports stage1

now_ms() { awk -v t="$EPOCHREALTIME" 'BEGIN{printf "%.1f", t*1000}'; }
mem_avail_kib() { awk '/^MemAvailable:/{print $2}' /proc/meminfo; }
rss_kib() { awk '/^Rss:/{print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# hello N: one hello pod; writes "<ms> <status>" to $work/hello.N and its output to $work/out.N
hello_run() {
    local n=$1 t0 t1 st=0
    t0=$(now_ms)
    "${R[@]}" run --net="$net" --stage1-path="$stage1" "$hello_id" --memory=$pod_mem </dev/null \
        >"$work/out.$n" 2>"$work/err.$n" || st=$?
    t1=$(now_ms)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') $st" >"$work/hello.$n"
}

# --- 1. start time -------------------------------------------------------------------------------
: >"$work/single.ms"
for i in 1 2 3; do
    hello_run "s$i"
    read -r ms st <"$work/hello.s$i"
    [ "$st" = 0 ] || { bench_log "single run $i failed (status $st):"; tail -n 5 "$work/err.s$i" >&2; exit 1; }
    echo "$ms" >>"$work/single.ms"
    bench_log "alone $i: $ms ms"
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
done
single=$(bench_median %.6g <"$work/single.ms")

bench_log "$pods pods at once (--net=$net)"
t0=$(now_ms)
for i in $(seq 1 "$pods"); do hello_run "c$i" & done
wait
t1=$(now_ms)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
failed=0
: >"$work/conc.ms"
for i in $(seq 1 "$pods"); do
    read -r ms st <"$work/hello.c$i"
    echo "$ms" >>"$work/conc.ms"
    if [ "$st" != 0 ] || ! grep -q "Hello from a rkt-rs pod" "$work/out.c$i"; then
        failed=$((failed + 1))
        bench_log "concurrent pod $i failed (status $st):"; tail -n 5 "$work/err.c$i" >&2
    fi
done
"${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
mean=$(awk '{s+=$1} END{printf "%.1f", s/NR}' "$work/conc.ms")
slowest=$(sort -n "$work/conc.ms" | tail -n 1)

# --- 2. memory -----------------------------------------------------------------------------------
settle() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; sleep 3; }
settle
base=$(mem_avail_kib)
bench_log "memory: $pods sleeping pods"
sleeper_pids=()
for i in $(seq 1 "$pods"); do
    mkdir -p "$work/mark$i"
    "${R[@]}" run --net=none --stage1-path="$stage1" --uuid-file-save="$work/uuid$i" \
        --volume=mark,kind=host,source="$work/mark$i" "$sleeper_id" --memory=$pod_mem \
        --mount=volume=mark,target=/mark -- --no-check --write=/mark/up --sleep-ms=3600000 \
        </dev/null >"$work/sleep.out.$i" 2>"$work/sleep.err.$i" &
    sleeper_pids+=($!)
done
# sleeper_report I: what is known of idle pod I that never wrote its mark: whether its
# `rkt run` (the VMM, which stage0 became) still runs and the CPU time it has used, the pod's
# state, how many of the others came up, and the tails of its console and stderr.
sleeper_report() {
    local i=$1 pid=${sleeper_pids[$(($1 - 1))]} up=0 j
    for j in $(seq 1 "$pods"); do [ -e "$work/mark$j/up" ] && up=$((up + 1)); done
    bench_log "sleeping pod $i never started ($up of $pods did):"
    if kill -0 "$pid" 2>/dev/null; then
        awk '{printf "bench:   its VMM (pid %s) state %s, CPU %.1f s user, %.1f s system\n", $1, $3, $14 / 100, $15 / 100}' \
            "/proc/$pid/stat" >&2
    else
        local st=0
        wait "$pid" || st=$?
        bench_log "  its rkt run exited with status $st"
    fi
    [ -s "$work/uuid$i" ] && "$rkt" --dir="$dir" status "$(cat "$work/uuid$i")" 2>&1 | sed 's/^/bench:   /' >&2 || true
    bench_log "  console (last 5 lines):"; tail -n 5 "$work/sleep.out.$i" >&2
    bench_log "  stderr (last 5 lines):"; tail -n 5 "$work/sleep.err.$i" >&2
}
deadline=$((SECONDS + 900))
for i in $(seq 1 "$pods"); do
    until [ -e "$work/mark$i/up" ]; do
        [ $SECONDS -lt $deadline ] || { sleeper_report "$i"; exit 1; }
        sleep 1
    done
done
sleep 10 # the guests settle (and report what their boot freed)
rkt_avail=$(mem_avail_kib)
rkt_rss=0
for i in $(seq 1 "$pods"); do
    pid=$(cat "$dir/pods/run/$(cat "$work/uuid$i")/pid")
    rkt_rss=$((rkt_rss + $(rss_kib "$pid")))
done
for i in $(seq 1 "$pods"); do "$rkt" --dir="$dir" stop "$(cat "$work/uuid$i")" >/dev/null 2>&1 || true; done
wait
"${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
settle
qbase=$(mem_avail_kib)
bench_log "memory: $pods idle QEMU microvms of $vm_mib MiB"
cmdline="$BENCH_GUEST_CMDLINE rkt_test=hold"
for i in $(seq 1 "$pods"); do
    qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off \
        -enable-kvm -cpu "host$BENCH_QEMU_TIMER" -m "$vm_mib" -smp 1 -nodefaults -no-user-config -nographic -no-reboot \
        -serial "file:$work/qemu.$i.log" -kernel "$kernel" -initrd "$cache/initramfs.cpio" \
        -append "$cmdline" </dev/null >/dev/null 2>&1 &
    qemu_pids+=($!)
done
for i in $(seq 1 "$pods"); do
    until grep -q RKT-TEST-INIT-MARKER "$work/qemu.$i.log" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { bench_log "qemu $i never booted"; exit 1; }
        sleep 1
    done
done
sleep 10
qemu_avail=$(mem_avail_kib)
qemu_rss=0
for p in "${qemu_pids[@]}"; do qemu_rss=$((qemu_rss + $(rss_kib "$p"))); done
for p in "${qemu_pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
qemu_pids=()

rkt_used=$((base - rkt_avail)); qemu_used=$((qbase - qemu_avail))
echo "density benchmark: $pods pods, --memory=$pod_mem ($vm_mib MiB VMs), L1 with $cpus vCPU(s)$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
printf '%-44s %9s ms\n' "one hello pod alone (median of 3)" "$single" \
    "$pods at once: until the last ended" "$wall" \
    "$pods at once: mean per pod" "$mean" "$pods at once: slowest pod" "$slowest"
echo "$pods at once: $((pods - failed)) of $pods exited 0"
printf '%-44s %9s MiB\n' "rkt: sum of VMM RSS" "$((rkt_rss / 1024))" \
    "rkt: L1 MemAvailable drop" "$((rkt_used / 1024))" \
    "qemu microvm: sum of RSS" "$((qemu_rss / 1024))" \
    "qemu microvm: L1 MemAvailable drop" "$((qemu_used / 1024))"
[ "$failed" = 0 ] || { bench_log "$failed of $pods concurrent pods failed"; exit 1; }
echo "RATIO density_mem_vs_qemu $(awk -v a="$rkt_used" -v b="$qemu_used" 'BEGIN{printf "%.2f", a/b}') (VMM RSS sum vs QEMU RSS sum: $(awk -v a="$rkt_rss" -v b="$qemu_rss" 'BEGIN{printf "%.2f", a/b}'))"
echo "RATIO density10_vs_single $(awk -v w="$wall" -v n="$pods" -v c="$cpus" -v s="$single" 'BEGIN{printf "%.2f", (w * c / n) / s}')"
