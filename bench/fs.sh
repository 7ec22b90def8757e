#!/bin/bash
# bench/fs.sh [ROUNDS]
#
# File-system throughput of a guest: our in-process virtio-fs (`stage1-vmm boot --share`)
# against QEMU `-M microvm` with `vhost-user-fs-device` (virtio-mmio) and virtiofsd (the Rust
# one, `cargo install virtiofsd`), and beside them a read-only erofs image of the same tree on
# our virtio-blk (`stage1-vmm boot --disk`).
#
# The data, made once per run on a tmpfs ($NESTED_KVM_TMP inside the harness): a 256 MiB file
# and a 10 000-file tree (tree/aN/bN/cN/fNN: 10 x 10 x 5 dirs, 20 small files each). A busybox
# initramfs guest (the host's static /usr/bin/busybox) mounts the share (or the erofs disk) and
# times, with /proc/uptime (10 ms steps) around each step, printed on the serial console:
#   mount  the mount(8) call;
#   read   `dd bs=1M` of the 256 MiB file to /dev/null (cold: each round is a fresh guest);
#   walk   `find tree | wc -l` (busybox find lstat()s every entry): 10 611 entries;
#   write  `dd bs=1M count=256` of zeros to a new file, then `sync` (virtio-fs only; the host
#          removes the file after each run).
# Same kernel (PVH vmlinux), same guest memory, same command line, 1 vCPU; ours and the peer
# alternate, ROUNDS rounds (default $N or 3). mkfs.erofs of the whole data set is timed once
# (a per-image cost). virtiofsd runs with --cache=always (ours: CachePolicy::Always),
# --sandbox=none and --seccomp=none (`stage1-vmm boot` is not confined either), both request
# queues have 256 entries, and QEMU's microvm gets `pit=on,pic=on` as our VMM has an in-kernel
# PIT and PIC (FS_BENCH_QEMU_PIT=off to drop them). Each guest ends itself with `sysrq b`:
# reboot(2) can wait minutes for an L2 timer under nested TCG (docs/nested-kvm.md).
#
# Prints every round, a table of medians, the medians of the per-round ratios, how many runs
# stalled (did not finish within FS_BENCH_TIMEOUT; the medians skip them), then LAST:
#   RATIO fs_read_vs_virtiofsd <x>    RATIO fs_write_vs_virtiofsd <x>    RATIO fs_walk_vs_virtiofsd <x>
# Unlike the other benches' time ratios, these are THROUGHPUT ratios, ours / peer (= peer's
# median time / our median time): higher is better; issue 15 expects >= 0.8, goal >= 1.0.
#
# Needs a KVM that boots Linux: run plainly, it prepares on the host (apt: qemu-system-x86,
# erofs-utils, and libseccomp-dev + libcap-ng-dev to build virtiofsd; `cargo install virtiofsd`
# into /var/cache/rkt-rs/bin, outside the clone, so later runs reuse it; the static VMM; the
# kernel) and re-runs itself under ci/nested-kvm. Environment: N (rounds), VMM_BIN,
# CARGO_TARGET_DIR, RKT_TEST_KERNEL (default <repo>/build/kernel/vmlinux), BENCH_MEM (MiB,
# default 512: the 256 MiB file fits the guest's page cache), VIRTIOFSD (default
# /var/cache/rkt-rs/bin/virtiofsd), FS_BENCH_PROFILE=1 (one extra run of each virtio-fs side
# under `strace -c -f`: the syscall tables of our VMM and of virtiofsd, and our VM exit profile), FS_BENCH_ONLY (a subset of "ours peer erofs"),
# FS_BENCH_TIMEOUT (seconds per guest, default 300).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
ROOT=$repo
. "$here/lib.sh"
# Guests wait on timers here for seconds: both get the one-shot LAPIC timer (bench/lib.sh).
bench_lapic_timer oneshot
rounds=${1:-${N:-3}}
kernel=${RKT_TEST_KERNEL:-$repo/build/kernel/vmlinux}
mem=${BENCH_MEM:-512}
bindir=/var/cache/rkt-rs/bin
virtiofsd=${VIRTIOFSD:-$bindir/virtiofsd}
busybox=${RKT_TEST_BUSYBOX:-/usr/bin/busybox}
only=" ${FS_BENCH_ONLY:-ours peer erofs} "
vm_timeout=${FS_BENCH_TIMEOUT:-300}
prepare() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
    command -v strace >/dev/null || need+=(strace)
    [ -x "$busybox" ] || need+=(busybox-static)
    if [ ! -x "$virtiofsd" ]; then
        dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
        dpkg -s libcap-ng-dev >/dev/null 2>&1 || need+=(libcap-ng-dev)
    fi
    bench_apt_install "${need[@]}"
    if [ ! -x "$virtiofsd" ]; then
        bench_log "building virtiofsd (cargo install virtiofsd --root ${bindir%/bin}); cached for later runs"
        # Outside the clone (its rust-toolchain.toml pins the project's toolchain, not this one's).
        (cd / && CARGO_TARGET_DIR=$(mktemp -d) && trap 'rm -rf "$CARGO_TARGET_DIR"' EXIT &&
            export CARGO_TARGET_DIR && cargo install -q --locked virtiofsd --root "${bindir%/bin}") >&2
    fi
    [ -s "$kernel" ] || "$repo/kernel-config/build.sh" >&2
    bench_vmm
}

if [ -z "${NESTED_KVM:-}" ]; then
    prepare
    bench_reexec_nested VMM_BIN="$VMM" -- "$@"
fi
VMM=${VMM:-${VMM_BIN:-}}
[ -n "$VMM" ] || bench_vmm
for f in "$VMM" "$kernel" "$virtiofsd" "$busybox" "$(command -v mkfs.erofs)" "$(command -v qemu-system-x86_64)"; do
    [ -e "$f" ] || { bench_log "missing ${f:-a tool} (run bench/fs.sh on the host first to prepare)"; exit 1; }
done

work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/bench-fs.XXXXXX")
vpid=""
cleanup() { [ -n "$vpid" ] && kill "$vpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
data=$work/data
mkdir -p "$data" "$work/initrd/bin" "$work/initrd/dev" "$work/initrd/proc" "$work/initrd/mnt"

# --- the data set ---------------------------------------------------------------------------
t0=$EPOCHREALTIME
dd if=/dev/zero of="$data/big" bs=1M count=256 status=none
python3 - "$data/tree" <<'EOF'
import os, sys
root = sys.argv[1]
for a in range(10):
    for b in range(10):
        for c in range(5):
            d = os.path.join(root, f"a{a}", f"b{b}", f"c{c}")
            os.makedirs(d)
            for f in range(20):
                with open(os.path.join(d, f"f{f:02}"), "w") as fh:
                    fh.write(f"{a} {b} {c} {f}\n" * 4)
EOF
entries=$(find "$data/tree" | wc -l)
bench_log "data set: 256 MiB file + tree of $entries entries in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
t0=$EPOCHREALTIME
mkfs.erofs "$work/data.erofs" "$data" >"$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; exit 1; }
mkfs_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
erofs_mib=$(du -m "$work/data.erofs" | cut -f1)
bench_log "mkfs.erofs: $mkfs_s s, image $erofs_mib MiB"

# --- the guest ------------------------------------------------------------------------------
cp "$busybox" "$work/initrd/bin/busybox"
cat >"$work/initrd/init" <<'EOF'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
mark() { read u _ </proc/uptime; echo "FSB $1 $u"; }
fail() { echo "FSB error $1"; echo b >/proc/sysrq-trigger; $B reboot -nf; }
mark mount0
case "$fsb" in
virtiofs) $B mount -t virtiofs rkt /mnt || fail mount ;;
erofs) $B mount -t erofs -o ro /dev/vda /mnt || fail mount ;;
*) fail "mode $fsb" ;;
esac
mark mount1
mark read0
$B dd if=/mnt/big of=/dev/null bs=1M 2>/dev/null || fail read
mark read1
mark walk0
n=$($B find /mnt/tree | $B wc -l)
mark walk1
echo "FSB entries $n"
if [ "$fsb" = virtiofs ]; then
    mark write0
    $B dd if=/dev/zero of=/mnt/out bs=1M count=256 2>/dev/null || fail write
    $B sync
    mark write1
    echo "FSB written $($B stat -c %s /mnt/out)"
fi
echo "FSB done"
# sysrq b: an immediate reset. reboot(2) can wait minutes for an L2 timer under nested TCG.
echo b >/proc/sysrq-trigger
$B reboot -nf
EOF
chmod 755 "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"

# The quiet command line of bench/boot.sh; only the reboot method differs (see there).
common="$BENCH_GUEST_CMDLINE${FS_BENCH_APPEND:+ $FS_BENCH_APPEND}"
ours_cmd() { # MODE: sets cmd
    local dev=(--share "rkt=$data")
    [ "$1" = erofs ] && dev=(--disk "$work/data.erofs,ro")
    cmd=("$VMM" boot --kernel "$kernel" --initramfs "$work/initramfs.cpio" --mem "$mem" --cpus 1
        --no-stdin --replace-cmdline --cmdline "$common reboot=k fsb=$1" "${dev[@]}" --timeout "$vm_timeout")
}
sock=$work/virtiofsd.sock
qpit=${FS_BENCH_QEMU_PIT:-on}
qemu=(qemu-system-x86_64 -M "microvm,x-option-roms=off,pit=$qpit,pic=$qpit,rtc=off,acpi=off,memory-backend=mem"
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -global virtio-mmio.force-legacy=false
    -enable-kvm -cpu "host,-svm,-vmx$BENCH_QEMU_TIMER" -m "$mem" -smp 1 -nodefaults -no-user-config -nographic -no-reboot
    -serial stdio -kernel "$kernel" -initrd "$work/initramfs.cpio"
    -chardev "socket,id=vfs,path=$sock" -device vhost-user-fs-device,chardev=vfs,tag=rkt,queue-size=256
    -append "$common reboot=t fsb=virtiofs")

# parse OUT WALL: "mount read walk write entries written wall" (seconds; NA when missing).
parse() {
    awk -v wall="$2" '
        $1 == "FSB" { v[$2] = $3 }
        END {
            split("mount read walk write", k, " ")
            for (i = 1; i <= 4; i++) {
                a = v[k[i] "0"]; b = v[k[i] "1"]
                printf "%s ", (a != "" && b != "") ? sprintf("%.2f", b - a) : "NA"
            }
            printf "%s %s %s\n", (v["entries"] != "" ? v["entries"] : "NA"), (v["written"] != "" ? v["written"] : "NA"), wall
        }' "$1"
}

# until_done OUT ERR CMD...: runs the VM CMD (at most FS_BENCH_TIMEOUT seconds); true when its
# guest printed "FSB done". The guest ends itself with sysrq b (an immediate reset).
until_done() {
    local out=$1 err=$2
    shift 2
    timeout -k 5 "$vm_timeout" "$@" </dev/null >"$out" 2>"$err" || true
    grep -q '^FSB done' "$out"
}

# run NAME: one guest; appends its parsed line to $work/NAME.tsv.
run() {
    local name=$1 out=$work/$1.out t0 t1 st=0
    case $only in *" $name "*) ;; *) echo "skipped"; return ;; esac
    rm -f "$data/out"
    t0=$EPOCHREALTIME
    case $name in
    ours | erofs)
        ours_cmd "$( [ "$name" = ours ] && echo virtiofs || echo erofs)"
        until_done "$out" "$work/$name.err" "${cmd[@]}" || st=$?
        ;;
    peer)
        rm -f "$sock"
        "$virtiofsd" --socket-path="$sock" --shared-dir="$data" --cache=always --sandbox=none \
            --seccomp=none --log-level=error 2>"$work/virtiofsd.err" &
        vpid=$!
        local i
        for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
        until_done "$out" "$work/$name.err" "${qemu[@]}" || st=$?
        kill "$vpid" 2>/dev/null || true
        wait "$vpid" 2>/dev/null || true
        vpid=""
        ;;
    esac
    t1=$EPOCHREALTIME
    local line
    line=$(parse "$out" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
    echo "$line" >>"$work/$name.tsv"
    if ! grep -q "FSB done" "$out" || grep -q "FSB error" "$out"; then
        bench_log "$name: the guest did not finish (status $st):"
        tail -n 12 "$out" "$work/$name.err" "$work/virtiofsd.err" >&2 2>/dev/null || true
    fi
    echo "$line"
}

col() { awk -v c="$1" '$c != "NA" {print $c}' "$2" | bench_median %.2f; }

: >"$work/ours.tsv"; : >"$work/peer.tsv"; : >"$work/erofs.tsv"
bench_log "$rounds rounds, ours and virtiofsd alternating, then erofs; ${mem} MiB guests, 1 vCPU"
echo "fs benchmark: $rounds rounds, ${mem} MiB, 1 vCPU, kernel $(basename "$kernel")$( [ -n "${NESTED_KVM:-}" ] && echo ', inside ci/nested-kvm (L2 under TCG)')"
echo "per round (seconds, guest /proc/uptime): mount read walk write entries bytes_written | host wall"
for i in $(seq 1 "$rounds"); do
    if [ $((i % 2)) = 1 ]; then o=$(run ours); p=$(run peer); else p=$(run peer); o=$(run ours); fi
    e=$(run erofs)
    echo "round $i: ours $o | virtiofsd $p | erofs $e"
done

if [ "${FS_BENCH_PROFILE:-0}" = 1 ]; then
    # One more run of each virtio-fs side under `strace -c -f` (slower: the figures of these
    # runs are not in the table), ours also with its VM exit profile.
    echo "profile: one run each under strace -c -f (not in the table)"
    rm -f "$data/out"
    ours_cmd virtiofs
    until_done "$work/prof.out" "$work/prof.err" env RKT_VMM_EXIT_STATS=1 \
        strace -c -f -o "$work/strace-ours.txt" "${cmd[@]}" || true
    echo "profile ours: $(parse "$work/prof.out" NA)"
    rm -f "$data/out" "$sock"
    strace -c -f -o "$work/strace-virtiofsd.txt" "$virtiofsd" --socket-path="$sock" --shared-dir="$data" \
        --cache=always --sandbox=none --seccomp=none --log-level=error 2>"$work/virtiofsd.err" &
    vpid=$!
    for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
    until_done "$work/prof-peer.out" "$work/prof-peer.err" "${qemu[@]}" || true
    for i in $(seq 1 50); do kill -0 "$vpid" 2>/dev/null || break; sleep 0.1; done
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    vpid=""
    echo "profile virtiofsd: $(parse "$work/prof-peer.out" NA)"
    echo "--- stage1-vmm syscalls (strace -c -f, whole VM run)"
    head -n 22 "$work/strace-ours.txt"
    echo "--- virtiofsd syscalls (strace -c -f, whole VM run)"
    head -n 22 "$work/strace-virtiofsd.txt"
    echo "--- stage1-vmm VM exits"
    grep '^exits:' "$work/prof.err" || true
fi

mib_s() { awk -v t="$1" 'BEGIN{ if (t == "NA" || t <= 0) print "NA"; else printf "%.1f", 256 / t }'; }
per_s() { awk -v t="$1" -v n="$entries" 'BEGIN{ if (t == "NA" || t <= 0) print "NA"; else printf "%.0f", n / t }'; }
echo "medians (seconds; throughput in parentheses), $entries tree entries, 256 MiB file:"
printf '%-30s %8s %18s %20s %18s %8s\n' "" mount read walk "write+sync" "VM wall"
for name in ours peer erofs; do
    case $name in
    ours) label="stage1-vmm virtio-fs" ;;
    peer) label="QEMU microvm + virtiofsd" ;;
    erofs) label="stage1-vmm erofs on virtio-blk" ;;
    esac
    m=$(col 1 "$work/$name.tsv"); r=$(col 2 "$work/$name.tsv"); w=$(col 3 "$work/$name.tsv")
    wr=$(col 4 "$work/$name.tsv"); wall=$(col 7 "$work/$name.tsv")
    printf '%-30s %8s %18s %20s %18s %8s\n' "$label" "$m" "$r ($(mib_s "$r") MiB/s)" \
        "$w ($(per_s "$w")/s)" "$( [ "$wr" = NA ] && echo - || echo "$wr ($(mib_s "$wr") MiB/s)")" "$wall"
done
echo "mkfs.erofs of the data set (per image): $mkfs_s s, image $erofs_mib MiB"
ratio() { # COLUMN: peer median time / our median time
    awk -v o="$(col "$1" "$work/ours.tsv")" -v p="$(col "$1" "$work/peer.tsv")" \
        'BEGIN{ if (o == "NA" || p == "NA" || o <= 0) print "NA"; else printf "%.2f", p / o }'
}
# Rounds are adjacent in time, so per-round ratios are less sensitive to the machine's load
# drifting than the ratio of the medians (which also mixes rounds where one side stalled).
paired() { # COLUMN: median over rounds with both figures of peer time / our time
    paste -d' ' "$work/ours.tsv" "$work/peer.tsv" |
        awk -v c="$1" '{ o = $c; p = $(c + 7); if (o != "NA" && p != "NA" && o > 0) printf "%.2f\n", p / o }' | bench_median %.2f
}
echo "paired throughput ratios ours/peer (median of per-round ratios): read $(paired 2), write $(paired 4), walk $(paired 3)"
stalls() { awk '$2 == "NA" || $3 == "NA" || $4 == "NA" { n++ } END { print n + 0 }' "$1"; }
echo "runs that did not finish within FS_BENCH_TIMEOUT (guest stalled): ours $(stalls "$work/ours.tsv"), virtiofsd $(stalls "$work/peer.tsv")"
echo "RATIO fs_read_vs_virtiofsd $(ratio 2)"
echo "RATIO fs_write_vs_virtiofsd $(ratio 4)"
echo "RATIO fs_walk_vs_virtiofsd $(ratio 3)"
