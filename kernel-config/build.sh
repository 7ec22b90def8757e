#!/bin/bash
# kernel-config/build.sh [--out DIR]
#
# Builds a kernel from Debian's linux-source package and copies vmlinux,
# bzImage and config into DIR (default: <repo>/build/kernel). By default the
# pod guest kernel booted by stage1-vmm (fragment guest.config); ci/nested-kvm
# builds its L1 kernel with RKT_KERNEL_FRAGMENTS="guest.config l1.config"
# --out <repo>/build/kernel-l1.
#
# Cached in /var/cache/rkt-rs/kernel/<key>/ (outside the clone), key = sha256
# of the fragments, build.sh, check.sh, the linux-source package version and
# the compiler version. A hit costs seconds; a miss costs a build (3.5-7 min
# on 2 cores; the object dir is kept, so a fragment change rebuilds
# incrementally). Concurrent invocations serialize on a flock.
#
# Environment:
#   RKT_KERNEL_CACHE      cache root (default /var/cache/rkt-rs)
#   RKT_KERNEL_FRAGMENTS  space-separated fragment files, later ones override
#                         earlier ones (default: "guest.config", relative to
#                         kernel-config/)
#   RKT_KERNEL_JOBS       make -j (default: nproc)
#   RKT_KERNEL_QUIET=1    say nothing on a cache hit
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=$repo/build/kernel
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    -h|--help) sed -n '2,/^set /s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

cache_root=${RKT_KERNEL_CACHE:-/var/cache/rkt-rs}
jobs=${RKT_KERNEL_JOBS:-$(nproc)}
log() { echo "kernel: $*" >&2; }

# --- dependencies -----------------------------------------------------------
deps=(bc bison flex libelf-dev libssl-dev cpio make gcc libc6-dev xz-utils linux-source)
mapfile -t need < <(
    dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${deps[@]}" 2>/dev/null |
        awk -v want="${deps[*]}" '$2 == "installed" { ok[$1] = 1 }
            END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!ok[w[i]]) print w[i] }')
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
fi

tarball=$(ls -1 /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1)
[ -n "$tarball" ] || { log "no /usr/src/linux-source-*.tar.xz after installing linux-source"; exit 1; }
srcpkg=$(basename "$tarball" .tar.xz)
srcver=$(dpkg-query -W -f='${Version}' "$srcpkg")

frags=()
for f in ${RKT_KERNEL_FRAGMENTS:-guest.config}; do
    case $f in /*) ;; *) f=$here/$f ;; esac
    [ -f "$f" ] || { log "missing fragment $f"; exit 1; }
    frags+=("$f")
done

key=$( {
    for f in "${frags[@]}"; do echo "== ${f##*/}"; cat "$f"; done
    echo "== build.sh"; cat "$here/build.sh"
    echo "== check.sh"; cat "$here/check.sh"
    echo "== source $srcpkg $srcver"
    echo "== cc $(gcc --version | head -n 1)"
} | sha256sum | cut -c1-64)
cache=$cache_root/kernel/$key

publish_out() {
    mkdir -p "$out"
    local name src
    for name in vmlinux bzImage config; do
        src=$cache/$name
        [ "$src" -ef "$out/$name" ] && continue   # already a hard link to it
        ln -f "$src" "$out/.$name.tmp.$$" 2>/dev/null || cp -f "$src" "$out/.$name.tmp.$$"
        mv -f "$out/.$name.tmp.$$" "$out/$name"
    done
    echo "$key" > "$out/.key.tmp.$$" && mv -f "$out/.key.tmp.$$" "$out/key"
}

complete() { [ -s "$cache/vmlinux" ] && [ -s "$cache/bzImage" ] && [ -s "$cache/config" ]; }

if complete; then
    publish_out
    [ "${RKT_KERNEL_QUIET:-0}" = 1 ] || log "cached ($key) -> $out"
    exit 0
fi

mkdir -p "$cache_root/kernel"
exec 9>"$cache_root/kernel/.lock"
if ! flock -n 9; then
    log "waiting for another kernel build (lock $cache_root/kernel/.lock)"
    flock 9
fi
if complete; then   # built by whoever held the lock
    publish_out
    [ "${RKT_KERNEL_QUIET:-0}" = 1 ] || log "cached ($key) -> $out"
    exit 0
fi

# --- source tree (extracted once per source version); one object dir per
# fragment set, kept so that a fragment change rebuilds incrementally ----------
work=$cache_root/kernel-work/$srcpkg-$srcver
src=$work/src
set_name=$(for f in "${frags[@]}"; do basename "$f" .config; done | paste -sd+)
obj=$work/obj-$set_name
if [ ! -f "$src/.extracted" ]; then
    log "extracting $tarball"
    rm -rf "$work/src.tmp" && mkdir -p "$work/src.tmp"
    tar -xf "$tarball" -C "$work/src.tmp" --strip-components=1
    touch "$work/src.tmp/.extracted"
    rm -rf "$src" && mv "$work/src.tmp" "$src"
fi
mkdir -p "$obj"

# --- configure --------------------------------------------------------------
start=$(date +%s)
buildlog=$obj.log
: > "$buildlog"
run() { "$@" >>"$buildlog" 2>&1 || { log "failed: $* (last lines of $buildlog:)"; tail -n 40 "$buildlog" >&2; exit 1; }; }
mk() { run make -C "$src" O="$obj" "$@"; }

log "configuring ${frags[*]##*/} (log: $buildlog)"
mk tinyconfig
run "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "${frags[@]}"
mk olddefconfig
"$here/check.sh" "$obj/.config" "${frags[@]}"

# --- build ------------------------------------------------------------------
log "building vmlinux bzImage with -j$jobs"
mk -j"$jobs" vmlinux bzImage

tmp=$cache_root/kernel/.tmp.$key.$$
rm -rf "$tmp" && mkdir -p "$tmp"
cp "$obj/vmlinux" "$tmp/vmlinux"
cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$obj/.config" "$tmp/config"
sync -f "$tmp/vmlinux" 2>/dev/null || true
mv -T "$tmp" "$cache" 2>/dev/null || rm -rf "$tmp"   # lost a race: keep theirs
publish_out
log "built in $(( $(date +%s) - start )) s ($key) -> $out"
