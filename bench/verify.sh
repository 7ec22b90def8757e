#!/usr/bin/env bash
# Benchmark: image signature verification (Sequoia, pure-Rust backend).
#  1. Verify a 64 MiB gpg-signed ACI: our streaming verifier (trust/examples/verify.rs) vs
#     `gpgv` on the same files: RATIO verify_vs_gpgv (expected <= 0.8, goal <= 0.6).
#  2. `rkt fetch` of the same image signed (verified while it streams) vs with
#     --insecure-options=image: RATIO signed_vs_unsigned_fetch (expected <= 1.10), printed
#     again last as RATIO fetch_verified_vs_insecure.
#
# Usage: bench/verify.sh [RUNS]          (default 5 runs; medians are reported)
# Env:   RKT=path/to/rkt                 (default: build/bin/rkt if present, else a release build)
#        BENCH_DIR=/var/tmp/...          (work directory; on a real disk, not tmpfs)
#        KEEP=1                          (keep the work directory)
# Needs gpg and gpgv (ci/deps.sh --bench installs them).
set -euo pipefail

RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/var/tmp}/rkt-bench-verify.$$}
mkdir -p "$BENCH_DIR"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"; }
trap cleanup EXIT

TD=${CARGO_TARGET_DIR:-$ROOT/target}
. "$ROOT/bench/lib.sh"
bench_rkt
(cd "$ROOT" && CARGO_TARGET_DIR="$TD" cargo build --release -q -p trust --example verify)
VERIFY="$TD/release/examples/verify"
echo "rkt: $RKT" >&2

# --- a ~64 MB gzip image (62 MiB random + 200 MiB of text that gzip shrinks to ~1 MiB) ------------------------------------
IMG="$BENCH_DIR/img"
ACI="$BENCH_DIR/bench.aci"
mkdir -p "$IMG/rootfs/opt"
cat > "$IMG/manifest" <<'JSON'
{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench/signed","labels":[{"name":"version","value":"1.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}
JSON
head -c $((62 << 20)) /dev/urandom > "$IMG/rootfs/opt/random.bin"
# (yes ends by SIGPIPE when head has enough: not a failure)
{ yes "the quick brown fox jumps over the lazy dog 0123456789" || true; } | head -c $((200 << 20)) > "$IMG/rootfs/opt/text.txt"
tar -C "$IMG" -cf - manifest rootfs | gzip -1 > "$ACI"
CSIZE=$(stat -c %s "$ACI")
echo "image: $((CSIZE >> 20)) MiB gzip" >&2

# --- a gpg key and its detached armored signature (what image publishers make) ---------------
export GNUPGHOME="$BENCH_DIR/gnupg"; mkdir -m 700 "$GNUPGHOME"
gpg --batch -q --passphrase '' --quick-gen-key 'Bench <bench@example.com>' ed25519 sign 1y 2>/dev/null
FPR=$(gpg --with-colons --list-keys bench@example.com | awk -F: '/^fpr/ {print $10; exit}')
gpg --batch -q --armor --detach-sign -u "$FPR" -o "$ACI.asc" "$ACI"
gpg --batch -q --export -o "$BENCH_DIR/key.gpg" "$FPR"
gpg --batch -q --armor --export -o "$BENCH_DIR/key.asc" "$FPR"
"$RKT" --local-config "$BENCH_DIR/etc" trust --root --skip-fingerprint-review "$BENCH_DIR/key.asc" 2>/dev/null

# --- timing -----------------------------------------------------------------------------------
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a / b }'; }
# Each measurement: "<wall s> <cpu s>".
TIMEFORMAT='%R %U %S'
measure() { { time "$@" >/dev/null 2>&1 ; } 2>&1 | awk 'END { printf "%s %.3f\n", $1, $2 + $3 }'; }
ours_once() { "$VERIFY" "$BENCH_DIR/key.asc" "$ACI.asc" "$ACI"; }
gpgv_once() { gpgv --keyring "$BENCH_DIR/key.gpg" "$ACI.asc" "$ACI"; }
signed_once() { "$RKT" --dir "$BENCH_DIR/store" --local-config "$BENCH_DIR/etc" fetch "$ACI"; }
insecure_once() { "$RKT" --dir "$BENCH_DIR/store" --local-config "$BENCH_DIR/etc" --insecure-options=image fetch "$ACI"; }

ours_once >/dev/null 2>&1 || { echo "our verifier rejected the gpg signature" >&2; exit 1; }
gpgv_once >/dev/null 2>&1 || { echo "gpgv rejected the gpg signature" >&2; exit 1; }
signed_once >/dev/null 2>&1 || { echo "signed fetch failed" >&2; "$RKT" --dir "$BENCH_DIR/store" --local-config "$BENCH_DIR/etc" fetch "$ACI"; exit 1; }

T_OURS=(); T_GPGV=(); T_SIGNED=(); T_INSECURE=(); C_SIGNED=(); C_INSECURE=()
for r in $(seq 1 "$RUNS"); do
    read -r w _ < <(measure ours_once); T_OURS+=("$w")
    read -r w _ < <(measure gpgv_once); T_GPGV+=("$w")
    rm -rf "$BENCH_DIR/store"; sync
    read -r w c < <(measure signed_once); T_SIGNED+=("$w"); C_SIGNED+=("$c")
    rm -rf "$BENCH_DIR/store"; sync
    read -r w c < <(measure insecure_once); T_INSECURE+=("$w"); C_INSECURE+=("$c")
    printf 'run %d: verify ours %ss gpgv %ss  fetch signed %ss (cpu %ss) insecure %ss (cpu %ss)\n' "$r" \
        "${T_OURS[-1]}" "${T_GPGV[-1]}" "${T_SIGNED[-1]}" "${C_SIGNED[-1]}" "${T_INSECURE[-1]}" "${C_INSECURE[-1]}" >&2
done
MC_SIGNED=$(printf '%s\n' "${C_SIGNED[@]}" | bench_median %.6g)
MC_INSECURE=$(printf '%s\n' "${C_INSECURE[@]}" | bench_median %.6g)
M_OURS=$(printf '%s\n' "${T_OURS[@]}" | bench_median %.6g)
M_GPGV=$(printf '%s\n' "${T_GPGV[@]}" | bench_median %.6g)
M_SIGNED=$(printf '%s\n' "${T_SIGNED[@]}" | bench_median %.6g)
M_INSECURE=$(printf '%s\n' "${T_INSECURE[@]}" | bench_median %.6g)
printf 'image                  %d MiB gzip, ed25519 signature made by gpg\n' $((CSIZE >> 20))
printf 'median verify (ours)   %.3f s\n' "$M_OURS"
printf 'median verify (gpgv)   %.3f s\n' "$M_GPGV"
printf 'median fetch signed    %.3f s wall, %.3f s cpu\n' "$M_SIGNED" "$MC_SIGNED"
printf 'median fetch insecure  %.3f s wall, %.3f s cpu\n' "$M_INSECURE" "$MC_INSECURE"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'RATIO verify_vs_gpgv %.2f\n' "$(div "$M_OURS" "$M_GPGV")"
printf 'RATIO cpu_signed_vs_unsigned_fetch %.2f\n' "$(div "$MC_SIGNED" "$MC_INSECURE")"
printf 'RATIO signed_vs_unsigned_fetch %.2f\n' "$(div "$M_SIGNED" "$M_INSECURE")"
printf 'RATIO fetch_verified_vs_insecure %.2f\n' "$(div "$M_SIGNED" "$M_INSECURE")"
