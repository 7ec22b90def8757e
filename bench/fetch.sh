#!/usr/bin/env bash
# Benchmark: `rkt fetch` of a ~100 MB (uncompressed) gzip ACI against the floor
# `gzip -dc x.aci | tar -x` and against `gzip -dc x.aci | sha256sum`.
#
# Usage: bench/fetch.sh [RUNS]          (default 5 runs; medians are reported)
# Env:   RKT=path/to/rkt                (default: build/bin/rkt if present, else a release build)
#        BENCH_DIR=/var/tmp/...         (work directory; on a real disk, not tmpfs)
#        KEEP=1                         (keep the work directory)
# The last line is `RATIO fetch_vs_gunzip_untar <x>` (median rkt fetch / median gunzip|untar).
set -euo pipefail

RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/var/tmp}/rkt-bench-fetch.$$}
mkdir -p "$BENCH_DIR"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"; }
trap cleanup EXIT

# --- the rkt binary -------------------------------------------------------------------------
. "$ROOT/bench/lib.sh"
bench_rkt
echo "rkt: $RKT" >&2

# --- the image: a few large incompressible-ish files + many small text files ----------------
IMG="$BENCH_DIR/img"
ACI="$BENCH_DIR/bench.aci"
mkdir -p "$IMG/rootfs/opt/data" "$IMG/rootfs/usr/lib/bench" "$IMG/rootfs/usr/share/doc/bench"
cat > "$IMG/manifest" <<'EOF'
{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench","labels":[{"name":"version","value":"1.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/sh"],"user":"0","group":"0"}}
EOF
# 3 x 16 MiB random data (incompressible: media, compressed assets).
for i in 1 2 3; do
    head -c $((16 << 20)) /dev/urandom > "$IMG/rootfs/opt/data/blob$i.bin"
done
# ~24 MiB of real binaries and libraries (compress about 2-3x).
budget=$((24 << 20)); used=0
for f in /usr/lib/x86_64-linux-gnu/*.so* /usr/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    s=$(stat -c %s "$f")
    [ "$s" -gt $((4 << 20)) ] && continue
    cp "$f" "$IMG/rootfs/usr/lib/bench/" 2>/dev/null || continue
    used=$((used + s))
    [ "$used" -ge "$budget" ] && break
done
# ~6000 small text files (~4 KiB each, ~24 MiB): configs, docs, sources.
awk -v dir="$IMG/rootfs/usr/share/doc/bench" 'BEGIN {
    srand(42);
    for (i = 0; i < 6000; i++) {
        d = sprintf("%s/d%02d", dir, i % 60);
        if (i < 60) system("mkdir -p " d);
        f = sprintf("%s/file%05d.txt", d, i);
        n = 40 + int(rand() * 40);
        for (l = 0; l < n; l++)
            printf("line %d of file %d: key_%d = value-%d # %s\n", l, i, int(rand()*1000), int(rand()*100000),
                   substr("the quick brown fox jumps over the lazy dog and keeps running", 1, 10 + int(rand()*50))) > f;
        close(f);
    }
}'
tar -C "$IMG" -cf - manifest rootfs | gzip -6 > "$ACI"
USIZE=$(gzip -dc "$ACI" | wc -c)
CSIZE=$(stat -c %s "$ACI")
NFILES=$(find "$IMG/rootfs" | wc -l)
echo "image: $NFILES entries, $((USIZE / 1048576)) MiB uncompressed, $((CSIZE / 1048576)) MiB gzip" >&2

# --- timing ---------------------------------------------------------------------------------
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a / b }'; }

# Each measurement: "<wall s> <cpu s>" (bash's `time` covers the whole pipeline).
TIMEFORMAT='%R %U %S'
measure() { { time "$@" ; } 2>&1 >/dev/null | awk 'END { printf "%s %.3f\n", $1, $2 + $3 }'; }
fetch_once() { "$RKT" --dir "$BENCH_DIR/store" --insecure-options=image fetch "$ACI" > "$BENCH_DIR/id"; }
untar_once() { gzip -dc "$ACI" | tar -x -C "$BENCH_DIR/untar"; }
sum_once() { gzip -dc "$ACI" | sha256sum > "$BENCH_DIR/sum"; }
# What fetch does to the filesystem (one file, synced), without hashing or validation.
file_once() { gzip -dc "$ACI" > "$BENCH_DIR/plain.tar" && sync -f "$BENCH_DIR/plain.tar"; }

T_FETCH=(); T_UNTAR=(); T_SUM=(); T_FILE=(); C_FETCH=(); C_UNTAR=(); C_SUM=(); C_FILE=()
for r in $(seq 1 "$RUNS"); do
    rm -rf "$BENCH_DIR/store" "$BENCH_DIR/untar"; mkdir -p "$BENCH_DIR/untar"; sync
    read -r w c < <(measure fetch_once); T_FETCH+=("$w"); C_FETCH+=("$c")
    sync
    read -r w c < <(measure untar_once); T_UNTAR+=("$w"); C_UNTAR+=("$c")
    sync
    read -r w c < <(measure sum_once); T_SUM+=("$w"); C_SUM+=("$c")
    rm -f "$BENCH_DIR/plain.tar"; sync
    read -r w c < <(measure file_once); T_FILE+=("$w"); C_FILE+=("$c")
    printf 'run %d: fetch %ss (cpu %ss)  gunzip|untar %ss (cpu %ss)  gunzip|sha256sum %ss (cpu %ss)  gunzip>file+sync %ss (cpu %ss)\n' \
        "$r" "${T_FETCH[-1]}" "${C_FETCH[-1]}" "${T_UNTAR[-1]}" "${C_UNTAR[-1]}" "${T_SUM[-1]}" "${C_SUM[-1]}" \
        "${T_FILE[-1]}" "${C_FILE[-1]}" >&2
    if [ "$(cat "$BENCH_DIR/id")" != "sha256-$(cut -d' ' -f1 "$BENCH_DIR/sum")" ]; then
        echo "ID mismatch: $(cat "$BENCH_DIR/id") vs $(cat "$BENCH_DIR/sum")" >&2
        exit 1
    fi
done

M_FETCH=$(printf '%s\n' "${T_FETCH[@]}" | bench_median %.6g)
M_UNTAR=$(printf '%s\n' "${T_UNTAR[@]}" | bench_median %.6g)
M_SUM=$(printf '%s\n' "${T_SUM[@]}" | bench_median %.6g)
printf 'image            %d entries, %d MiB uncompressed, %d MiB gzip\n' "$NFILES" $((USIZE >> 20)) $((CSIZE >> 20))
M_FILE=$(printf '%s\n' "${T_FILE[@]}" | bench_median %.6g)
MC_FILE=$(printf '%s\n' "${C_FILE[@]}" | bench_median %.6g)
MC_FETCH=$(printf '%s\n' "${C_FETCH[@]}" | bench_median %.6g)
MC_UNTAR=$(printf '%s\n' "${C_UNTAR[@]}" | bench_median %.6g)
MC_SUM=$(printf '%s\n' "${C_SUM[@]}" | bench_median %.6g)
printf 'median rkt fetch        %.3f s wall, %.3f s cpu  (%.0f MiB/s uncompressed)\n' "$M_FETCH" "$MC_FETCH" \
    "$(div "$((USIZE >> 20))" "$M_FETCH")"
printf 'median gunzip|untar     %.3f s wall, %.3f s cpu\n' "$M_UNTAR" "$MC_UNTAR"
printf 'median gunzip|sha256sum %.3f s wall, %.3f s cpu\n' "$M_SUM" "$MC_SUM"
printf 'median gunzip>file+sync %.3f s wall, %.3f s cpu\n' "$M_FILE" "$MC_FILE"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'RATIO cpu_fetch_vs_gunzip_untar %.2f\n' "$(div "$MC_FETCH" "$MC_UNTAR")"
printf 'RATIO fetch_vs_gunzip_to_file %.2f\n' "$(div "$M_FETCH" "$M_FILE")"
printf 'RATIO fetch_vs_gunzip_sha256sum %.2f\n' "$(div "$M_FETCH" "$M_SUM")"
printf 'RATIO fetch_vs_gunzip_untar %.2f\n' "$(div "$M_FETCH" "$M_UNTAR")"
