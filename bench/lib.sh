# Shared by the bench scripts (sourced, after ROOT is set).

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
    (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$td" \
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

# bench_median: the median of the numbers on stdin, one per line (NA when there are none).
bench_median() { sort -n | awk '{a[NR]=$1} END{ if (NR==0) {print "NA"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
