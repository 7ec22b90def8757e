#!/usr/bin/env bash
# Probes the L2 guest's timer interrupts inside ci/nested-kvm, in stage1-vmm and in QEMU microvm
# side by side: a busybox init prints /proc/softirqs, sleeps 5 s, prints them again with the
# local timer interrupt count (LOC), and reboots. See docs/nested-kvm.md ("L2 timers").
#
#   ci/nested-kvm bash ci/nested-kvm.d/l2-timer-probe.sh [BUILD_DIR]   (default: <repo>/build)
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$repo/build}
kernel=$build/kernel/vmlinux
vmm=$build/bin/stage1-vmm
busybox=${RKT_TEST_BUSYBOX:-/usr/bin/busybox}
for f in "$kernel" "$vmm" "$busybox"; do
    [ -e "$f" ] || { echo "l2-timer-probe: missing $f (bash ci/build.sh; busybox-static)" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/l2-timer.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/root/{bin,dev,proc,sys}
cp "$busybox" "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
echo "PROBE: softirqs at init" > /dev/console
$B grep -E "TIMER|RCU" /proc/softirqs > /dev/console
$B sleep 5
echo "PROBE: after sleep 5" > /dev/console
$B grep -E "TIMER|RCU" /proc/softirqs > /dev/console
$B grep -E "LOC" /proc/interrupts > /dev/console
$B uptime > /dev/console
echo "PROBE: done" > /dev/console
$B reboot -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null) > "$work/initrd.cpio"
# stage1-vmm's default command line (boot/cmdline.rs), errors kept on the console.
common="console=ttyS0 panic=1 noxsave pci=off acpi=off 8250.nr_uarts=2 i8042.nokbd i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable no_timer_check rcupdate.rcu_expedited=1 pty.legacy_count=0 loop.max_loop=0 noreplace-smp loglevel=4"
echo "=== stage1-vmm"
time timeout 150 "$vmm" boot --kernel "$kernel" --initramfs "$work/initrd.cpio" --mem 256 --cpus 1 \
    --no-stdin --replace-cmdline --cmdline "$common reboot=k" --timeout 120
echo "=== qemu microvm"
time timeout 150 qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,acpi=off \
    -enable-kvm -cpu host,-svm,-vmx -m 256 -smp 1 -nodefaults -no-user-config -nographic -no-reboot \
    -serial stdio -kernel "$kernel" -initrd "$work/initrd.cpio" -append "$common reboot=t"
