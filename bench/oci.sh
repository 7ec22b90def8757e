#!/usr/bin/env bash
# Benchmark: importing a ~100 MB multi-layer OCI image (issue 16).
#   ours:  `rkt fetch oci:DIR:1.0` into an empty store (convert + the ACI importer: digests
#          checked, hashed sha256 + sha512, blob published and indexed)
#   umoci: `umoci unpack --image DIR:1.0 BUNDLE` of the same layout (umoci reads layouts,
#          not archives; it writes the files and its mtree manifest)
# One run each (after one untimed warm-up of each, so both read the layout from the page
# cache); `rkt fetch oci-archive:` of the same image is timed too, and, with docker-registry
# installed, `rkt fetch docker://` from a registry on loopback against `skopeo copy` +
# `umoci unpack`. Prints RATIO oci_import_vs_umoci last (expected <= 0.7, goal <= 0.5).
#
# Usage: bench/oci.sh
# Env:   RKT=path/to/rkt        (default: build/bin/rkt if present, else a release build)
#        BENCH_DIR=/var/tmp/... (work directory; on a real disk, not tmpfs)
#        KEEP=1                 (keep the work directory)
# Needs umoci and skopeo (ci/deps.sh installs them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/var/tmp}/rkt-bench-oci.$$}
mkdir -p "$BENCH_DIR"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"; }
trap cleanup EXIT
for t in umoci skopeo; do
    command -v "$t" >/dev/null || { echo "bench/oci.sh: $t missing (ci/deps.sh installs it)" >&2; exit 1; }
done

. "$ROOT/bench/lib.sh"
bench_rkt
echo "rkt: $RKT" >&2

# --- the image: 3 layers, ~100 MB compressed ----------------------------------------------
# layer 1: 40 MiB random + 4000 small text files; layer 2: 40 MiB random + 120 MiB of text;
# layer 3: 20 MiB random, a whiteout and an opaque directory.
L="$BENCH_DIR/layout"
cd "$BENCH_DIR"
umoci init --layout "$L" >/dev/null
umoci new --image "$L:1.0"
umoci unpack --image "$L:1.0" b >/dev/null
mkdir -p b/rootfs/opt/small b/rootfs/opt/dir
head -c $((40 << 20)) /dev/urandom > b/rootfs/opt/r1.bin
for i in $(seq 1 4000); do echo "file $i of the small-file layer" > "b/rootfs/opt/small/f$i.txt"; done
echo x > b/rootfs/opt/dir/old
umoci repack --image "$L:1.0" b >/dev/null
head -c $((40 << 20)) /dev/urandom > b/rootfs/opt/r2.bin
{ yes "the quick brown fox jumps over the lazy dog 0123456789" || true; } | head -c $((120 << 20)) > b/rootfs/opt/text.txt
umoci repack --image "$L:1.0" b >/dev/null
head -c $((20 << 20)) /dev/urandom > b/rootfs/opt/r3.bin
rm -f b/rootfs/opt/small/f1.txt
rm -rf b/rootfs/opt/dir && mkdir b/rootfs/opt/dir && echo y > b/rootfs/opt/dir/new
umoci repack --image "$L:1.0" b >/dev/null
umoci config --image "$L:1.0" --config.entrypoint /bin/true >/dev/null
umoci gc --layout "$L"
rm -rf b
skopeo --insecure-policy copy -q "oci:$L:1.0" "oci-archive:$BENCH_DIR/img.tar:1.0"
SIZE=$(du -sb "$L/blobs" | cut -f1)
echo "image: $((SIZE >> 20)) MiB of blobs in 3 layers" >&2

# --- timing ---------------------------------------------------------------------------------
TIMEFORMAT='%R'
measure() { { time "$@" >/dev/null 2>&1 ; } 2>&1 | tail -1; }
ours_dir() { rm -rf "$BENCH_DIR/store"; "$RKT" --dir "$BENCH_DIR/store" --insecure-options=image fetch "oci:$L:1.0"; }
ours_archive() { rm -rf "$BENCH_DIR/store"; "$RKT" --dir "$BENCH_DIR/store" --insecure-options=image fetch "oci-archive:$BENCH_DIR/img.tar:1.0"; }
umoci_once() { rm -rf "$BENCH_DIR/bundle"; umoci unpack --image "$L:1.0" "$BENCH_DIR/bundle"; }
ours_dir >/dev/null 2>&1 || { echo "rkt fetch failed" >&2; ours_dir; exit 1; }
umoci_once >/dev/null 2>&1 || { echo "umoci unpack failed" >&2; umoci_once; exit 1; }
rm -rf "$BENCH_DIR/store" "$BENCH_DIR/bundle"; sync
T_OURS=$(measure ours_dir); sync
T_ARCHIVE=$(measure ours_archive); sync
T_UMOCI=$(measure umoci_once); sync
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# --- docker:// from a registry on loopback --------------------------------------------------
# ours: `rkt fetch docker://` into an empty store (download with digests checked, convert,
# import); peer: `skopeo copy docker:// oci:` then `umoci unpack` (download, then the files),
# what a runtime that keeps OCI layouts does. Skipped without Debian's docker-registry.
DOCKER_RATIO=
if [ -x /usr/bin/docker-registry ]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "version: 0.1" "log:" "  level: error" "  accesslog:" "    disabled: true" \
        "storage:" "  filesystem:" "    rootdirectory: $BENCH_DIR/registry" \
        "http:" "  addr: 127.0.0.1:$PORT" "  secret: bench" > "$BENCH_DIR/registry.yml"
    /usr/bin/docker-registry serve "$BENCH_DIR/registry.yml" >/dev/null 2>&1 &
    REG_PID=$!
    trap 'kill $REG_PID 2>/dev/null; cleanup' EXIT
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$L:1.0" "docker://127.0.0.1:$PORT/bench/img:1.0"
    ours_docker() { rm -rf "$BENCH_DIR/store"; "$RKT" --dir "$BENCH_DIR/store" --insecure-options=image,http fetch "docker://127.0.0.1:$PORT/bench/img:1.0"; }
    peer_docker() {
        rm -rf "$BENCH_DIR/pulled" "$BENCH_DIR/bundle"
        skopeo --insecure-policy copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/bench/img:1.0" "oci:$BENCH_DIR/pulled:1.0" &&
            umoci unpack --image "$BENCH_DIR/pulled:1.0" "$BENCH_DIR/bundle"
    }
    ours_docker >/dev/null 2>&1 || { echo "rkt fetch docker:// failed" >&2; ours_docker; exit 1; }
    peer_docker >/dev/null 2>&1 || { echo "skopeo + umoci failed" >&2; peer_docker; exit 1; }
    sync
    T_DOCKER=$(measure ours_docker); sync
    T_PEER=$(measure peer_docker); sync
    echo "rkt fetch docker://        ${T_DOCKER} s"
    echo "skopeo copy + umoci unpack ${T_PEER} s"
    DOCKER_RATIO=$(div "$T_DOCKER" "$T_PEER")
else
    echo "bench/oci.sh: no /usr/bin/docker-registry (ci/deps.sh installs it): docker:// not measured" >&2
fi

echo "rkt fetch oci:DIR          ${T_OURS} s"
echo "rkt fetch oci-archive:TAR  ${T_ARCHIVE} s"
echo "umoci unpack               ${T_UMOCI} s"
if [ -n "$DOCKER_RATIO" ]; then echo "RATIO docker_fetch_vs_skopeo_umoci $DOCKER_RATIO"; fi
echo "RATIO oci_archive_import_vs_umoci $(div "$T_ARCHIVE" "$T_UMOCI")"
echo "RATIO oci_import_vs_umoci $(div "$T_OURS" "$T_UMOCI")"
