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
