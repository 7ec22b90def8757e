#!/usr/bin/env bash
# Packs a stage1 image (an ACI with rkt's stage1 entrypoint annotations).
#   ci/mkstage1.sh ns  OUT.aci   rootfs: /stage1-ns (host side), /run /stop /gc /enter
#                                 /app_add /app_start /app_stop /app_rm -> stage1-ns (which
#                                 runs guest-init in its pod child), empty /dev /proc /sys /tmp
#                                 /rkt/status /rkt/errors /rkt/cgroup (the mount point of the
#                                 pod's cgroups: made in the image, not through the overlay at
#                                 each start) /opt/stage2, and for the apps' own PID namespace
#                                 /rkt/apps-proc /rkt/reaper-root (guest-init/src/pidns.rs)
#   ci/mkstage1.sh kvm OUT.aci   rootfs: /stage1-vmm, /run /stop /gc /enter /app_* -> stage1-vmm,
#                                 /init (static guest-init), /kernel/vmlinux, same empty dirs
# Inputs (override with env): BIN_DIR (default build/bin: mkaci, stage1-ns, stage1-vmm,
# guest-init), KERNEL (default build/kernel/vmlinux), MKACI (default $BIN_DIR/mkaci).
set -euo pipefail
cd "$(dirname "$0")/.."
flavor=${1:?usage: ci/mkstage1.sh ns|kvm OUT.aci}
out=${2:?usage: ci/mkstage1.sh ns|kvm OUT.aci}
bin=${BIN_DIR:-build/bin}
mkaci=${MKACI:-$bin/mkaci}
version=${STAGE1_VERSION:-0.1.0}
case "$flavor" in
  ns) host=stage1-ns ;;
  kvm) host=stage1-vmm ;;
  *) echo "mkstage1: unknown flavor $flavor (want ns or kvm)" >&2; exit 2 ;;
esac
for f in "$mkaci" "$bin/$host" "$bin/guest-init"; do
  [ -f "$f" ] || { echo "mkstage1: missing $f (run ci/build.sh first)" >&2; exit 1; }
done
extra=()
if [ "$flavor" = kvm ]; then
  kernel=${KERNEL:-build/kernel/vmlinux}
  [ -f "$kernel" ] || { echo "mkstage1: missing kernel $kernel" >&2; exit 1; }
  extra+=(--file "$kernel:/kernel/vmlinux:0644" --file "$bin/guest-init:/init:0755")
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
"$mkaci" --name "coreos.com/rkt/stage1-$flavor" \
  --label "version=$version" --label os=linux --label arch=amd64 \
  --annotation coreos.com/rkt/stage1/run=/run \
  --annotation coreos.com/rkt/stage1/enter=/enter \
  --annotation coreos.com/rkt/stage1/attach=/attach \
  --annotation coreos.com/rkt/stage1/gc=/gc \
  --annotation coreos.com/rkt/stage1/stop=/stop \
  --annotation coreos.com/rkt/stage1/interface-version=5 \
  --file "$bin/$host:/$host:0755" \
  --annotation coreos.com/rkt/stage1/app/add=/app_add \
  --annotation coreos.com/rkt/stage1/app/start=/app_start \
  --annotation coreos.com/rkt/stage1/app/stop=/app_stop \
  --annotation coreos.com/rkt/stage1/app/rm=/app_rm \
  --symlink "/run:$host" --symlink "/stop:$host" --symlink "/gc:$host" --symlink "/enter:$host" --symlink "/attach:$host" \
  --symlink "/app_add:$host" --symlink "/app_start:$host" --symlink "/app_stop:$host" --symlink "/app_rm:$host" \
  --dir /dev --dir /proc --dir /sys --dir /tmp --dir /rkt/status --dir /rkt/errors --dir /rkt/cgroup --dir /opt/stage2 \
  --dir /rkt/apps-proc --dir /rkt/reaper-root \
  "${extra[@]}" -o "$tmp"
mv -f "$tmp" "$out"
echo "mkstage1: wrote $out" >&2
