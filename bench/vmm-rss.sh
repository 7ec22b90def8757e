#!/bin/bash
# bench/vmm-rss.sh [RUNS]
#
# Memory of the VMM process beyond its guest's RAM: our VMM (`stage1-vmm boot`) against
# `qemu-system-x86_64 -M microvm -enable-kvm`, same vmlinux, same initramfs (the test init in its
# `hold` mode: prints RKT-TEST-HOLDING and sleeps), same quiet command line and guest size as
# bench/boot.sh. Once the guest holds, the script reads /proc/PID/smaps of the VMM process:
# total RSS, the RSS of the guest RAM mappings (the run of adjacent mappings whose sizes add up
# to exactly the guest RAM and that holds the largest mapping: one anonymous mapping for QEMU;
# for ours the anonymous mapping with the kernel's and initramfs's file pages mapped into it),
# and the difference: "beyond guest". Medians of RUNS (default 3) runs each, the largest
# non-guest mappings of the last run, and last `RATIO vmm_rss_vs_qemu <ours/qemu beyond guest>`.
#
# Needs a KVM that boots Linux: run plainly, it prepares on the host and re-runs itself under
# ci/nested-kvm. Environment: VMM_BIN (default: the static release build, bench/lib.sh),
# CARGO_TARGET_DIR, RKT_TEST_KERNEL (default <repo>/build/kernel/vmlinux), BENCH_MEM (MiB,
# default 256), BENCH_CPUS (default 1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
# Same guest CPU features on both sides, the TSC-deadline timer included, as bench/boot.sh.
bench_lapic_timer deadline
runs=${1:-3}
tgt=${CARGO_TARGET_DIR:-$repo/target}
mkinit=$tgt/release/examples/mk_test_initramfs
kernel=${RKT_TEST_KERNEL:-$repo/build/kernel/vmlinux}
mem=${BENCH_MEM:-256}
cpus=${BENCH_CPUS:-1}

if [ -z "${NESTED_KVM:-}" ]; then
    command -v qemu-system-x86_64 >/dev/null || bench_apt_install qemu-system-x86
    [ -s "$kernel" ] || "$repo/kernel-config/build.sh" >&2
    bench_initramfs_maker
    bench_vmm
    bench_reexec_nested VMM_BIN="$VMM" -- "$@"
fi
VMM=${VMM:-${VMM_BIN:-}}
[ -n "$VMM" ] || bench_vmm
for f in "$VMM" "$mkinit" "$kernel"; do
    [ -e "$f" ] || { bench_log "missing $f (run bench/vmm-rss.sh on the host first to prepare)"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-rss.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$mkinit" "$work/initramfs.cpio"

common="$BENCH_GUEST_CMDLINE rkt_test=hold"
ours=("$VMM" boot --kernel "$kernel" --initramfs "$work/initramfs.cpio" --mem "$mem" --cpus "$cpus"
    --no-stdin --replace-cmdline --cmdline "$common reboot=k" --timeout 300)
qemu=(qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off
    -enable-kvm -cpu "host,-svm,-vmx$BENCH_QEMU_TIMER" -m "$mem" -smp "$cpus" -nodefaults -no-user-config -nographic
    -no-reboot -serial stdio -kernel "$kernel" -initrd "$work/initramfs.cpio" -append "$common reboot=t")

# smaps_split SMAPS MEM_BYTES: prints "total_kb guest_kb beyond_kb", then the largest non-guest
# mappings ("rss_kb name") on the following lines.
smaps_split() {
    python3 - "$1" "$2" <<'EOF'
import re, sys
maps = []  # [start, end, rss_kb, name]
for line in open(sys.argv[1]):
    m = re.match(r'^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$', line)
    if m:
        maps.append([int(m.group(1), 16), int(m.group(2), 16), 0, m.group(3) or '[anon]'])
    elif line.startswith('Rss:') and maps:
        maps[-1][2] = int(line.split()[1])
want = int(sys.argv[2])
big = max(range(len(maps)), key=lambda i: maps[i][1] - maps[i][0])
guest = {big}
for i in range(len(maps)):  # a run i..j of adjacent mappings, exactly `want` bytes, holding big
    size, j = 0, i
    while j < len(maps) and size < want and (j == i or maps[j][0] == maps[j - 1][1]):
        size += maps[j][1] - maps[j][0]
        j += 1
    if size == want and i <= big < j:
        guest = set(range(i, j))
        break
total = sum(m[2] for m in maps)
gkb = sum(maps[i][2] for i in guest)
print(total, gkb, total - gkb)
rest = {}
for i, m in enumerate(maps):
    if i not in guest:
        rest[m[3]] = rest.get(m[3], 0) + m[2]
for name, kb in sorted(rest.items(), key=lambda x: -x[1])[:8]:
    print(kb, name)
EOF
}

# measure NAME CMD...: starts CMD, waits for the hold line, prints "total guest beyond" (KiB).
measure() {
    local name=$1; shift
    "$@" </dev/null >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    local i
    for i in $(seq 1 1200); do
        grep -q RKT-TEST-HOLDING "$work/$name.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q RKT-TEST-HOLDING "$work/$name.out"; then
        bench_log "$name: the guest never held"; tail -n 5 "$work/$name.out" "$work/$name.err" >&2
        kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""
        echo "NA NA NA"; return
    fi
    sleep 1
    cp "/proc/$pid/smaps" "$work/$name.smaps"
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""
    smaps_split "$work/$name.smaps" $((mem << 20)) >"$work/$name.split"
    head -n 1 "$work/$name.split"
}

: >"$work/ours.tsv"; : >"$work/qemu.tsv"
for i in $(seq 1 "$runs"); do
    r=$(measure ours "${ours[@]}"); echo "$r" >>"$work/ours.tsv"
    q=$(measure qemu "${qemu[@]}"); echo "$q" >>"$work/qemu.tsv"
    bench_log "run $i: ours total/guest/beyond $r KiB | qemu $q KiB"
done
echo "VMM memory benchmark: $runs runs each, ${mem} MiB guest, ${cpus} vCPU(s)$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm')"
for name in ours qemu; do
    echo "largest non-guest mappings of the last $name run (RSS KiB):"
    [ -f "$work/$name.split" ] && sed -n '2,$s/^/    /p' "$work/$name.split"
done
col() { awk -v c="$1" '$c != "NA" {print $c}' "$2" | bench_median; }
for name in ours qemu; do
    printf '%-5s RSS total %8s KiB   guest RAM %8s KiB   beyond guest %8s KiB\n' "$name" \
        "$(col 1 "$work/$name.tsv")" "$(col 2 "$work/$name.tsv")" "$(col 3 "$work/$name.tsv")"
done
o=$(col 3 "$work/ours.tsv"); q=$(col 3 "$work/qemu.tsv")
echo "RATIO vmm_rss_vs_qemu $(awk -v a="$o" -v b="$q" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "NA" }')"
