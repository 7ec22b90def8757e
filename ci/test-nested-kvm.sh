#!/bin/bash
# ci/test-nested-kvm.sh: self-test of ci/nested-kvm (boots the L1 VM a few
# times, about 5-10 s each on 2 shared cores). Prints `N passed, N failed`
# and exits non-zero if anything failed. Set NESTED_KVM_FORCE=1 to test the
# L1 path on a host whose own KVM works.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
nk=$here/nested-kvm
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
ko() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }

work=$(mktemp -d /tmp/test-nested-kvm.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 1. exit status propagation
"$nk" sh -c 'exit 7'
rc=$?
check "exit status 7 propagates (got $rc)" [ "$rc" = 7 ]

# 2. environment inside L1: one boot, facts printed as KEY=VALUE lines
token=$RANDOM$RANDOM
echo "host-file-$token" > "$work/host-file"
mkdir -p "$work/cwd dir"
script='
echo "kvm=$( [ -c /dev/kvm ] && echo yes || echo no)"
echo "kvm_mod=$( [ -d /sys/module/kvm_amd ] || [ -d /sys/module/kvm_intel ] && echo yes || echo no)"
echo "hostfile=$(cat "$HOSTFILE" 2>&1)"
echo "tmpwrite=$(echo w > /tmp/nk-write-$NKTEST_TOKEN && cat /tmp/nk-write-$NKTEST_TOKEN)"
echo "cwd=$(pwd)"
echo "env=$NKTEST_VAR"
echo "nested=$NESTED_KVM tmp=$NESTED_KVM_TMP"
echo "ovl=$(mkdir -p $NESTED_KVM_TMP/o/l $NESTED_KVM_TMP/o/u $NESTED_KVM_TMP/o/w $NESTED_KVM_TMP/o/m &&
  mount -t overlay -o lowerdir=$NESTED_KVM_TMP/o/l,upperdir=$NESTED_KVM_TMP/o/u,workdir=$NESTED_KVM_TMP/o/w none $NESTED_KVM_TMP/o/m && echo yes)"
echo "lo=$(cat /sys/class/net/lo/flags)"
echo "aslr=$(cat /proc/sys/kernel/randomize_va_space)"
echo "rcuexp=$(cat /sys/kernel/rcu_expedited 2>&1)"
vser=$(grep -lx 0x0003 /sys/bus/virtio/devices/*/device | head -n 1); vser=${vser%/device}; vser=${vser##*/}
irqs() { awk -v d="$vser-" "index(\$0, d) { s += \$2 } END { print s + 0 }" /proc/interrupts; }
a=$(irqs); sleep 3; echo "bell=$(( $(irqs) - a ))"
echo to-stderr >&2
'
( cd "$work/cwd dir" && NKTEST_VAR="a b'c\$d" NKTEST_TOKEN=$token HOSTFILE=$work/host-file \
    "$nk" sh -c "$script" > "$work/out" 2> "$work/err" )
rc=$?
check "probe command exits 0 (got $rc)" [ "$rc" = 0 ]
get() { sed -n "s/^$1=//p" "$work/out"; }
check "/dev/kvm present inside" [ "$(get kvm)" = yes ]
check "kvm_amd or kvm_intel loaded" [ "$(get kvm_mod)" = yes ]
check "host file under /tmp readable inside" [ "$(get hostfile)" = "host-file-$token" ]
check "writes inside /tmp work" [ "$(get tmpwrite)" = w ]
check "cwd preserved" [ "$(get cwd)" = "$work/cwd dir" ]
check "env var passed through" [ "$(get env)" = "a b'c\$d" ]
check "NESTED_KVM=1 and NESTED_KVM_TMP set" [ "$(get nested)" = "1 tmp=/run/nested-tmp" ]
check "overlayfs mountable under NESTED_KVM_TMP" [ "$(get ovl)" = yes ]
check "loopback up" [ "$(get lo)" = 0x9 ]
# norandmaps unless NESTED_KVM_ASLR=1 (docs/nested-kvm.md, "ASLR in L1").
aslr_want=0; [ "${NESTED_KVM_ASLR:-0}" = 1 ] && aslr_want=2
check "L1 address randomization $aslr_want (got $(get aslr))" [ "$(get aslr)" = "$aslr_want" ]
# Expedited RCU grace periods (docs/nested-kvm.md, "RCU in L1").
check "L1 RCU expedited (got $(get rcuexp))" [ "$(get rcuexp)" = 1 ]
# The doorbell: a virtio-serial interrupt into L1 every NESTED_KVM_DOORBELL (1) s, in 3 s of
# silence on the other ports (docs/nested-kvm.md, item 6 of "What it does").
check "L1 gets the doorbell's interrupts (got $(get bell) in 3 s)" [ "$(get bell)" -ge 2 ]
check "stderr kept apart from stdout" \
    bash -c "grep -qx to-stderr '$work/err' && ! grep -q to-stderr '$work/out'"
check "writes inside L1 stay inside L1" [ ! -e "/tmp/nk-write-$token" ]

# 3. an L2 Linux guest boots with KVM inside L1 (the L1 kernel, which has 9p: PVH
#    entry from the ELF vmlinux, host root over virtio-9p on virtio-mmio; the pod
#    guest kernel in build/kernel has no 9p). The harness built it above.
vmlinux=$repo/build/kernel-l1/vmlinux
if [ -s "$vmlinux" ]; then
    NESTED_KVM_TIMEOUT=300 "$nk" qemu-system-x86_64 -accel kvm -cpu host -M microvm -m 256 -smp 1 \
        -nodefaults -no-user-config -display none -no-reboot -serial stdio \
        -kernel "$vmlinux" \
        -append "console=ttyS0 quiet panic=-1 reboot=t noxsave root=r rootfstype=9p rootflags=trans=virtio,version=9p2000.L ro init=/bin/echo -- L2-USERSPACE-OK" \
        -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
        -device virtio-9p-device,fsdev=r,mount_tag=r > "$work/l2" 2>&1
    check "L2 Linux boots to user space under KVM in L1" grep -q L2-USERSPACE-OK "$work/l2" ||
        sed 's/^/  l2: /' "$work/l2" | tail -n 20
else
    echo "SKIP: L2 boot: no $vmlinux (run ci/nested-kvm once)" >&2
fi

# 4. large output arrives intact, and in order
"$nk" seq 1 300000 > "$work/seq"
rc=$?
check "2 MB of stdout intact (rc $rc)" \
    [ "$(sha256sum < "$work/seq")" = "$(seq 1 300000 | sha256sum)" ]

# 5. a VM that dies without a status is reported, not hung on
NESTED_KVM_TIMEOUT=60 "$nk" sh -c 'echo c > /proc/sysrq-trigger' > "$work/crash" 2>&1
rc=$?
check "L1 crash -> non-zero exit with a reason (got $rc)" \
    bash -c "[ $rc -ne 0 ] && grep -q 'without COMMAND' '$work/crash'"

# 6. timeout kills the L1 VM
NESTED_KVM_TIMEOUT=8 "$nk" sleep 60 > "$work/timeout" 2>&1
rc=$?
check "timeout kills L1 (got $rc)" bash -c "[ $rc -ne 0 ] && grep -q 'timed out' '$work/timeout'"

# 7. a wedged L1 (no heartbeat: here l1-init's heartbeat loop is stopped) is killed early
NESTED_KVM_STALL=20 "$nk" sh -c 'kill -STOP $(pgrep -P 1 -x l1-init); sleep 120' > "$work/wedge" 2>&1
rc=$?
check "wedged L1 killed by the stall watchdog (got $rc)" \
    bash -c "[ $rc = 124 ] && grep -q 'wedged' '$work/wedge'"
check "the wedged L1's CPU state printed (registers with HLT, the local APIC's timer)" \
    bash -c "grep -q 'HLT=' '$work/wedge' && grep -q 'LVTT' '$work/wedge'"

# 8. a stall that ends goes on: at two thirds of NESTED_KVM_STALL the watchdog saves L1's CPU
# state and sends an NMI (the cure for a lost wakeup); here the heartbeat loop is stopped for
# 45 s and then continued, so L1 must survive the NMI, finish COMMAND and say it stalled
NESTED_KVM_STALL=60 "$nk" sh -c 'p=$(pgrep -P 1 -x l1-init); kill -STOP $p; sleep 45; kill -CONT $p; sleep 20; echo carried-on' > "$work/stall" 2>&1
rc=$?
check "a stalled L1 gets an NMI, survives it and goes on (got $rc)" \
    bash -c "[ $rc = 0 ] && grep -q carried-on '$work/stall' && grep -q 'woke after the watchdog' '$work/stall' && grep -q 'HLT=' '$work/stall'"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
