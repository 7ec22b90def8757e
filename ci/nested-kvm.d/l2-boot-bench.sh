#!/bin/bash
# l2-boot-bench.sh N VMLINUX [VMLINUX...]   (run it under ci/nested-kvm)
# Boots each kernel N times, alternating, as a KVM guest (QEMU microvm, no
# ACPI, host root over virtio-9p on virtio-mmio, init=/bin/echo) and prints
# the median and range of the wall time from QEMU start to QEMU exit (the
# guest's init prints, exits, the kernel panics and resets with reboot=t).
# Used to decide whether one kernel can serve as both guest and L1 kernel.
set -euo pipefail
n=$1; shift
[ -c /dev/kvm ] || { echo "l2-boot-bench: no /dev/kvm" >&2; exit 1; }
declare -A times
for ((i = 0; i < n; i++)); do
    for k in "$@"; do
        s=$(date +%s%N)
        out=$(qemu-system-x86_64 -accel kvm -cpu host -M microvm,acpi=off -m 256 -smp 1 \
            -nodefaults -no-user-config -display none -no-reboot -serial stdio \
            -kernel "$k" \
            -append "console=ttyS0 quiet panic=-1 reboot=t noxsave pci=off acpi=off root=r rootfstype=9p rootflags=trans=virtio,version=9p2000.L ro init=/bin/echo -- L2-OK" \
            -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
            -device virtio-9p-device,fsdev=r,mount_tag=r 2>&1)
        e=$(date +%s%N)
        grep -q L2-OK <<<"$out" || { echo "l2-boot-bench: $k did not reach init:" >&2; echo "$out" | tail -5 >&2; exit 1; }
        times[$k]+="$(( (e - s) / 1000000 )) "
    done
done
for k in "$@"; do
    echo "${times[$k]}" | tr ' ' '\n' | grep . | sort -n | awk -v k="$k" '
        { v[NR] = $1 } END { printf "%s: median %d ms (min %d, max %d, n=%d)\n", k, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
done
