# Shared by the bench scripts (sourced, after ROOT is set).

# The guest kernel command line of the VM benches: stage1-vmm's default line
# (stage1-vmm/src/boot/cmdline.rs, DEFAULT_CMDLINE) without its reboot method, which each bench
# picks per VMM (QEMU's microvm has no i8042). A stage1-vmm unit test keeps the two equal.
BENCH_GUEST_CMDLINE="console=ttyS0 panic=1 quiet loglevel=3 noxsave pci=off acpi=off 8250.nr_uarts=2 i8042.nokbd i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable no_timer_check rcupdate.rcu_expedited=1 pty.legacy_count=0 loop.max_loop=0 noreplace-smp"

# bench_lapic_timer DEFAULT: gives both VMMs' guests the same LAPIC timer, DEFAULT unless
# BENCH_LAPIC_TIMER says otherwise: `deadline` (TSC-deadline: QEMU's `-cpu host` offers it; ours
# through RKT_VMM_TSC_DEADLINE=1) or `oneshot` (what stage1-vmm gives its guests under
# ci/nested-kvm, vcpu::tsc_deadline_policy: L1 there loses L2's deadline interrupts, and a
# guest that waits on a timer can stall for minutes, docs/nested-kvm.md "L2 timers"; QEMU
# through `-tsc-deadline`). Exports RKT_VMM_TSC_DEADLINE; sets BENCH_QEMU_TIMER, a suffix for
# QEMU's `-cpu` value. Boot benches take `deadline` (a boot waits on no timer, and the one-shot
# timer's 100 ms calibration would be the guests' largest cost); benches whose guests wait on
# timers for seconds (network, file system) take `oneshot`.
bench_lapic_timer() {
    case ${BENCH_LAPIC_TIMER:-$1} in
        deadline) export RKT_VMM_TSC_DEADLINE=1; BENCH_QEMU_TIMER= ;;
        oneshot) export RKT_VMM_TSC_DEADLINE=0; BENCH_QEMU_TIMER=,-tsc-deadline ;;
        *) bench_log "BENCH_LAPIC_TIMER: deadline or oneshot, not '${BENCH_LAPIC_TIMER:-$1}'"; exit 2 ;;
    esac
}

# bench_log MSG...: one progress line on stderr, "bench: MSG".
bench_log() { echo "bench: $*" >&2; }

# bench_apt_install PKG...: apt-installs PKGs (no recommends; on failure once more after
# `apt-get update`), output on stderr; nothing without PKGs. The caller decides what is missing.
bench_apt_install() {
    [ $# -gt 0 ] || return 0
    bench_log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$@" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2; }
}

# bench_host_kvm_ok: true when this host's /dev/kvm boots Linux guests (ci/nested-kvm's test).
bench_host_kvm_ok() { [ -c /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; }

# bench_reexec_nested [VAR=VALUE...] -- ARG...: on the host ($NESTED_KVM unset) when its KVM cannot
# boot Linux, replaces this shell with `ci/nested-kvm bash $0 ARG...`, the VARs exported for the
# re-run; returns otherwise (inside L1, or where the host's KVM boots Linux).
bench_reexec_nested() {
    local kv=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do kv+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    [ -z "${NESTED_KVM:-}" ] && ! bench_host_kvm_ok || return 0
    bench_log "host KVM cannot boot Linux: re-running under ci/nested-kvm"
    [ ${#kv[@]} -eq 0 ] || export "${kv[@]}"
    exec "$ROOT/ci/nested-kvm" bash "$0" "$@"
}

# bench_sized_aci SIZE OUT HELLO MKACI: unless OUT exists, builds with MKACI an image
# example.com/bench-<size> of the static HELLO (its exec) and a SIZE (1M or 1G) file /data/blob:
# mostly zeros with 40 random bytes per 4 KiB, so it compresses about 80:1 (under stage0's 200:1
# compression-bomb limit) and is cheap to build. Exits the script when MKACI fails.
bench_sized_aci() {
    local size=$1 out=$2 hello=$3 mkaci=$4 blob=$2.blob
    [ -s "$out" ] && return 0
    bench_log "building the $size image"
    python3 -c 'import os, sys
n = {"1M": 1 << 20, "1G": 1 << 30}[sys.argv[1]] // 4096
with open(sys.argv[2], "wb") as f:
    for _ in range(n):
        f.write(os.urandom(40) + bytes(4056))' "$size" "$blob"
    "$mkaci" --name "example.com/bench-${size,,}" --label os=linux --label arch=amd64 \
        --exec /bin/hello --file "$hello:/bin/hello:0755" --file "$blob:/data/blob:0644" \
        -o "$out.tmp" || { rm -f "$out.tmp" "$blob"; bench_log "mkaci failed"; exit 1; }
    mv "$out.tmp" "$out"
    rm -f "$blob"
}

# bench_initramfs_maker: builds the test initramfs maker (stage1-vmm's mk_test_initramfs example,
# release) in ${CARGO_TARGET_DIR:-$ROOT/target}; cheap when up to date.
bench_initramfs_maker() {
    (cd "$ROOT" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target} \
        cargo build -q --release -p stage1-vmm --example mk_test_initramfs)
}

# Sets RKT to the rkt binary: $RKT if given, else build/bin/rkt if present, else a release build
# of stage0 in ${CARGO_TARGET_DIR:-$ROOT/target}.
bench_rkt() {
    [ -n "${RKT:-}" ] && return 0
    if [ -x "$ROOT/build/bin/rkt" ]; then
        RKT="$ROOT/build/bin/rkt"
        return 0
    fi
    local td=${CARGO_TARGET_DIR:-$ROOT/target}
    echo "building rkt (release) in $td ..." >&2
    (cd "$ROOT" && CARGO_TARGET_DIR="$td" cargo build --release -q -p stage0)
    RKT="$td/release/rkt"
}

# Sets VMM to the stage1-vmm binary the stage1-kvm image ships: $VMM_BIN if given, else the
# static release build (as ci/build.sh makes it) in ${CARGO_TARGET_DIR:-$ROOT/target}/static.
bench_vmm() {
    if [ -n "${VMM_BIN:-}" ]; then
        VMM=$VMM_BIN
        return 0
    fi
    local td=${CARGO_TARGET_DIR:-$ROOT/target}/static
    echo "building stage1-vmm (release, static) in $td ..." >&2
    . "$ROOT/ci/static-flags.sh"
    (cd "$ROOT" && RUSTFLAGS="$STATIC_RUSTFLAGS" CARGO_TARGET_DIR="$td" \
        cargo build --release -q --target x86_64-unknown-linux-gnu -p stage1-vmm --bin stage1-vmm)
    VMM="$td/x86_64-unknown-linux-gnu/release/stage1-vmm"
}

# Sets rkt, stage1, hello, mkaci (realpaths), n and net from the environment of an ns pod
# bench (RKT_BIN, RKT_STAGE1_NS_ACI, HELLO_BIN, MKACI, N, NET; defaults under build/) and checks
# the files exist; NAME prefixes the error. Call from the repository root.
bench_ns_inputs() {
    local name=$1 f
    rkt=$(realpath "${RKT_BIN:-build/bin/rkt}")
    stage1=$(realpath "${RKT_STAGE1_NS_ACI:-build/stage1-ns.aci}")
    hello=$(realpath "${HELLO_BIN:-build/bin/hello}")
    mkaci=$(realpath "${MKACI:-build/bin/mkaci}")
    n=${N:-20}
    net=${NET:-none}
    for f in "$rkt" "$stage1" "$hello" "$mkaci"; do
        [ -f "$f" ] || { echo "$name: missing $f (run make build)" >&2; exit 1; }
    done
}

# bench_ns_workdir NAME: makes the scratch directory $work (/tmp/rkt-bench-NAME.*) and rkt's
# data directory $dir on bench_data_fs ($data_fs); at exit the pods left are collected, the
# data file system unmounted and $work removed. Needs $rkt (bench_ns_inputs).
bench_ns_workdir() {
    work=$(mktemp -d "/tmp/rkt-bench-$1.XXXXXX")
    dir=$work/data
    trap bench_ns_cleanup EXIT
    data_fs=$(bench_data_fs "$work")
    dir=$data_fs/data
}

bench_ns_cleanup() {
    "$rkt" --dir="$dir" gc --grace-period=0s >/dev/null 2>&1 || true
    bench_data_fs_cleanup "$work"
    rm -rf "$work"
}

# bench_hello_image: builds the hello ACI (example.com/bench-hello, $work/hello.aci) and
# fetches it into $dir. Its tree is the one run-ns.sh gives crun (bin/hello and the empty proc,
# dev, sys and tmp a distribution image has too): without them each pod makes the three mount
# points in its overlay's upper directory (ext4 mkdirs with a copy-up of /: 0.3-0.4 ms of a
# pod, 30 alternating pairs).
bench_hello_image() {
    "$mkaci" --name example.com/bench-hello --label os=linux --label arch=amd64 \
        --exec /bin/hello --file "$hello:/bin/hello:0755" \
        --dir /proc --dir /dev --dir /sys --dir /tmp -o "$work/hello.aci"
    "$rkt" --dir="$dir" --insecure-options=image fetch "$work/hello.aci" >/dev/null 2>&1
}

# bench_data_fs WORK: prints the directory the ns benches keep rkt's data (and crun's bundle) in,
# per BENCH_FS: `journal` (default) a 2 GiB sparse ext4 image with a journal, loop-mounted at
# WORK/fs; `root` WORK itself. This machine's root file system is ext4 without a journal, and
# only there does ext4's inode allocator skip every inode freed in the last 5 minutes while
# its inode table block is dirty (fs/ext4/ialloc.c, `recently_deleted`, checked only when
# `s_journal` is NULL), one buffer lookup each: a loop that creates and removes pods pays more
# at each pod as the session goes on (hello pod 17-19 ms on the root file system against
# 13-14 ms on a journaled one, 2026-12-02), while crun creates no inodes on disk. A host's
# /var/lib/rkt is normally on a journaled file system. Without a loop device it says so and
# falls back to `root`. Unmount with bench_data_fs_cleanup.
bench_data_fs() {
    local work=$1
    if [ "${BENCH_FS:-journal}" = root ]; then
        echo "$work"
        return
    fi
    command -v mkfs.ext4 >/dev/null || bench_apt_install e2fsprogs >&2
    truncate -s 2G "$work/fs.img"
    mkfs.ext4 -q -F -O has_journal "$work/fs.img" >&2
    mkdir -p "$work/fs"
    if ! mount -o loop "$work/fs.img" "$work/fs" >&2; then
        bench_log "no loop device for a journaled ext4: rkt's data stays on $(findmnt -no FSTYPE -T "$work") (as BENCH_FS=root)"
        rm -f "$work/fs.img"
        echo "$work"
        return
    fi
    echo "$work/fs"
}

# bench_data_fs_cleanup WORK: unmounts what bench_data_fs mounted in WORK, if anything.
bench_data_fs_cleanup() {
    if mountpoint -q "$1/fs" 2>/dev/null; then
        umount "$1/fs" 2>/dev/null || umount -l "$1/fs"
    fi
}

# bench_timed_run NAME MARKER CMD...: runs CMD under /usr/bin/time with stdin from /dev/null,
# stdout to $work/NAME.out and stderr to $work/NAME.err ($work: the caller's scratch dir), and
# prints "marker_ms exit_ms rss_kb status": milliseconds from the start to the first stdout
# line containing MARKER (NA if none), to CMD's exit, its max RSS (KiB) and exit status.
bench_timed_run() {
    local name=$1 marker=$2; shift 2
    local t0 tm="" out=$work/$name.out rss
    t0=$EPOCHREALTIME
    {
        /usr/bin/time -f '%M' -o "$work/$name.rss" "$@" </dev/null 2>"$work/$name.err" |
            while IFS= read -r line; do
                case $line in *"$marker"*) [ -n "$tm" ] || { tm=$EPOCHREALTIME; echo "$tm" >"$work/$name.tm"; } ;; esac
                printf '%s\n' "$line"
            done >"$out"
    }
    local st=${PIPESTATUS[0]}
    local t1=$EPOCHREALTIME
    tm=$(cat "$work/$name.tm" 2>/dev/null || echo "")
    rm -f "$work/$name.tm"
    rss=$(tail -n 1 "$work/$name.rss" 2>/dev/null || echo 0)
    local ms_exit ms_mark
    ms_exit=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", (b-a)*1000}')
    if [ -n "$tm" ]; then ms_mark=$(awk -v a="$t0" -v b="$tm" 'BEGIN{printf "%.1f", (b-a)*1000}'); else ms_mark=NA; fi
    echo "$ms_mark $ms_exit $rss $st"
}

# bench_median [FMT]: the median of the numbers on stdin, one per line (NA when there are none):
# the middle one as written, or the mean of the two middle ones printed with the awk printf
# format FMT (default %.1f).
bench_median() {
    sort -n | awk -v f="${1:-%.1f}\n" '{a[NR]=$1} END{ if (NR==0) {print "NA"; exit} if (NR%2) print a[(NR+1)/2]; else printf f, (a[NR/2]+a[NR/2+1])/2 }'
}

# bench_net_ratio PREFIX PEER NET: the RATIO name of a pod benchmark run with --net=NET:
# PREFIX_vs_PEER for `none` (the comparable case), PREFIX_<net>_net_vs_PEER for any other.
bench_net_ratio() {
    local prefix=$1 peer=$2 net=$3
    if [ "$net" = none ]; then echo "${prefix}_vs_$peer"; else echo "${prefix}_${net//[^a-z0-9]/_}_net_vs_$peer"; fi
}
