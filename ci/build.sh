#!/usr/bin/env bash
# Builds everything into build/: host binaries, static guest binaries, the guest kernel,
# the stage1 images and the example image. Incremental: reruns are cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash ci/deps.sh
mkdir -p build/bin
export CARGO_TERM_QUIET=${CARGO_TERM_QUIET:-true}
echo "==> cargo build --release (host binaries)" >&2
cargo build --release --workspace --bins --exclude stage0
for b in stage1-vmm stage1-ns mkaci; do
  [ -f "target/release/$b" ] && install -m 0755 "target/release/$b" build/bin/
done
# stage1-vmm too: exec of the dynamic VMM (ld.so resolving its libraries) cost 0.15-0.45 s of
# a pod start inside ci/nested-kvm; the static one replaces it in build/bin and the stage1 image.
# stage1-ns too: it ships in its stage1 image and runs on whatever host runs the pod, so it
# needs none of the host's libraries (and its exec skips ld.so: 86 -> 57 page faults).
# rkt too: every pod start begins with its exec, and the dynamic one (ld.so, libc, 17k
# relocations) took ~0.5-1 ms longer to start; ns hello 18.2 -> 16.8 ms (docs/pods.md).
# rkt and stage1-ns are fixed-address executables, the others position-independent
# (ci/static-flags.sh says why); two target directories, so neither build invalidates the other.
. ci/static-flags.sh
echo "==> static binaries, position-independent (stage1-vmm, guest-init, hello, pod-check, escape-probe, http-lat)" >&2
RUSTFLAGS="$STATIC_RUSTFLAGS" CARGO_TARGET_DIR="$root/target/static" \
  cargo build --release --target x86_64-unknown-linux-gnu -p stage1-vmm -p guest-init -p rkt-tests --bins
for b in stage1-vmm guest-init hello pod-check escape-probe http-lat; do
  [ -f "target/static/x86_64-unknown-linux-gnu/release/$b" ] && \
    install -m 0755 "target/static/x86_64-unknown-linux-gnu/release/$b" build/bin/
done
echo "==> static binaries, fixed-address (rkt, stage1-ns)" >&2
RUSTFLAGS="$STATIC_EXEC_RUSTFLAGS" CARGO_TARGET_DIR="$root/target/static-exec" \
  cargo build --release --target x86_64-unknown-linux-gnu -p stage0 -p stage1-ns --bins
for b in rkt stage1-ns; do
  install -m 0755 "target/static-exec/x86_64-unknown-linux-gnu/release/$b" build/bin/
done
echo "==> guest kernel" >&2
# The pod guest kernel only (guest.config); ci/nested-kvm builds its own L1 kernel.
RKT_KERNEL_FRAGMENTS=guest.config bash kernel-config/build.sh --out build/kernel
echo "==> stage1 images" >&2
for f in ns kvm; do
  if [ -x ci/mkstage1.sh ] || [ -f ci/mkstage1.sh ]; then bash ci/mkstage1.sh "$f" "build/stage1-$f.aci"; fi
done
echo "==> appc ACE validator images (ci/ace.sh)" >&2
bash ci/ace.sh build/ace
echo "==> example image" >&2
build/bin/mkaci --name example.com/hello --label version=0.1.0 --label os=linux --label arch=amd64 \
  --exec /bin/hello --file build/bin/hello:/bin/hello:0755 -o build/example.aci
echo "==> build done" >&2
