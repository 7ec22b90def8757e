#!/bin/bash
# l2-boot-bench.sh N VMLINUX [VMLINUX...]   (run it under ci/nested-kvm)
# Boots each kernel N times, alternating, as a KVM guest the way a pod VM
# boots (QEMU microvm without ACPI, `pci=off acpi=off`, PVH entry) with a
# one-file initramfs whose static /init exits at once, and prints the median
# and range of the wall time from QEMU start to QEMU exit (init exits, the
# kernel panics and resets with reboot=t, QEMU exits with -no-reboot).
# Used to decide whether one kernel can serve as both guest and L1 kernel.
# L2_CPU: the -cpu of the guests (default host; host,-svm hides nested SVM).
set -euo pipefail
n=$1; shift
[ -c /dev/kvm ] || { echo "l2-boot-bench: no /dev/kvm" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root"
printf 'int main(void) { return 0; }\n' > "$tmp/init.c"
gcc -static -Os -o "$tmp/root/init" "$tmp/init.c"
(cd "$tmp/root" && echo init | cpio -o -H newc --quiet | gzip -1 > "$tmp/initrd")
declare -A times
for ((i = 0; i < n; i++)); do
    for k in "$@"; do
        s=$(date +%s%N)
        out=$(qemu-system-x86_64 -accel kvm -cpu "${L2_CPU:-host}" -M microvm,acpi=off -m 256 -smp 1 \
            -nodefaults -no-user-config -display none -no-reboot -serial stdio \
            -kernel "$k" -initrd "$tmp/initrd" \
            -append "console=ttyS0 quiet panic=-1 reboot=t noxsave pci=off acpi=off rdinit=/init" 2>&1)
        e=$(date +%s%N)
        grep -q "Attempted to kill init" <<<"$out" || {
            echo "l2-boot-bench: $k did not reach init:" >&2
            echo "$out" | grep -v '^\[.*\] \( ?\|<\)' | tail -n 25 >&2
            exit 1
        }
        times[$k]+="$(( (e - s) / 1000000 )) "
    done
done
for k in "$@"; do
    echo "${times[$k]}" | tr ' ' '\n' | grep . | sort -n | awk -v k="$k" '
        { v[NR] = $1 } END { printf "%s: median %d ms (min %d, max %d, n=%d)\n", k, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
done
