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
