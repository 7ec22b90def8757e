#!/usr/bin/env bash
# Pod networking benchmarks (one run each, N samples, medians), all inside a bench-made
# "host" network namespace (the machine's interfaces and iptables are never touched):
#  1. network setup of an ns pod with --net=default (netns + ptp/host-local/ipMasq ADD, as
#     stage1-ns logs it with --debug) vs a shell script doing the same: `ip netns add`, the
#     same plugin ADD with the same config (teardown outside the interval both sides);
#  2. ns pod start-to-exit of the hello image with --net=default vs --net=none (added ms);
#  then, unless NET_BENCH_KVM=0, in one ci/nested-kvm L1 run (`net.sh --kvm`):
#  3. KVM pod start-to-exit with --net=default vs --net=none (N_KVM samples each, added ms);
#  4. iperf3 TCP throughput, both directions, between the bench namespace and a KVM pod on
#     --net=default vs a QEMU microvm (the L1 kernel: the guest kernel's options plus 9p for
#     the host root its guest runs from; 1 vCPU, 512 MiB) with a tap and
#     `virtio-net-device` (vhost off, its default offloads), guest bench/net-qemu-guest.sh,
#     IPERF_SECONDS each; and, for the record, the same QEMU with every offload off.
# Lines `RATIO net_setup_vs_script <ours/script>` (expected <= 1.3) and, last,
# `RATIO net_kvm_vs_qemu <x>` (geometric mean of the up and down throughput ratios,
# expected >= 0.7).
#
# Inputs (env): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI (build/stage1-ns.aci),
# RKT_STAGE1_KVM_ACI (build/stage1-kvm.aci), RKT_TEST_KERNEL (build/kernel/vmlinux),
# NET_QEMU_KERNEL (build/kernel-l1/vmlinux, built here when missing),
# HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci), N (ns samples per side, default 10),
# N_KVM (KVM samples per side, default 3), IPERF_SECONDS (default 5), NET_BENCH_KVM (1).
# Needs root, containernetworking-plugins, iptables and qemu-system-x86 (ci/deps.sh --bench);
# installs iperf3 when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib.sh
# Guests wait on timers here for seconds: both get the one-shot LAPIC timer (bench/lib.sh).
bench_lapic_timer oneshot
mode=ns
[ "${1:-}" = --kvm ] && mode=kvm
rkt=$(realpath "${RKT_BIN:-build/bin/rkt}")
stage1=$(realpath "${RKT_STAGE1_NS_ACI:-build/stage1-ns.aci}")
stage1k=$(realpath "${RKT_STAGE1_KVM_ACI:-build/stage1-kvm.aci}")
kernel=$(realpath "${RKT_TEST_KERNEL:-build/kernel/vmlinux}")
qkernel=$(realpath -m "${NET_QEMU_KERNEL:-build/kernel-l1/vmlinux}")
hello=$(realpath "${HELLO_BIN:-build/bin/hello}")
mkaci=$(realpath "${MKACI:-build/bin/mkaci}")
n=${N:-10}
n_kvm=${N_KVM:-3}
secs=${IPERF_SECONDS:-5}
plugins=/usr/lib/cni
need=("$rkt" "$hello" "$mkaci" "$plugins/ptp" "$plugins/host-local")
if [ "$mode" = ns ]; then need+=("$stage1"); else need+=("$stage1k" "$kernel" "$qkernel" /usr/bin/iperf3); fi
for f in "${need[@]}"; do
  [ -f "$f" ] || { echo "net.sh: missing $f (bash ci/build.sh; ci/deps.sh --bench)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "net.sh: needs root" >&2; exit 1; }
export RKT_BIN=$rkt RKT_STAGE1_NS_ACI=$stage1 RKT_STAGE1_KVM_ACI=$stage1k RKT_TEST_KERNEL=$kernel \
  HELLO_BIN=$hello MKACI=$mkaci

if [ -z "${NET_BENCH_INSIDE:-}" ]; then
  hostns=rkt-bench-net-$$
  ip netns add "$hostns"
  trap 'ip netns del "$hostns" 2>/dev/null || true' EXIT
  # Network namespace only: pod netns bind mounts stay visible to later commands.
  NET_BENCH_INSIDE=1 nsenter --net="/var/run/netns/$hostns" "$0" "$@"
  if [ "$mode" = ns ] && [ "${NET_BENCH_KVM:-1}" = 1 ]; then
    # The KVM half in one L1 run (an exec where the host's KVM boots Linux).
    command -v iperf3 >/dev/null || bench_apt_install iperf3
    [ -f "$stage1k" ] && [ -f "$kernel" ] && command -v iperf3 >/dev/null ||
      { echo "net.sh: no stage1-kvm.aci, kernel or iperf3 for the KVM half (bash ci/build.sh)" >&2; exit 1; }
    [ -f "$qkernel" ] || RKT_KERNEL_FRAGMENTS="guest.config l1.config" \
      kernel-config/build.sh --out "$(dirname "$qkernel")"
    ci/nested-kvm bash bench/net.sh --kvm
  fi
  exit 0
fi
ip link set lo up
now_ns() { date +%s%N; }
median() { printf '%s\n' "$@" | bench_median %d; } # integer microseconds
ms_() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

if [ "$mode" = kvm ]; then
  # Under ci/nested-kvm, pods need a plain tmpfs below their data dir (NESTED_KVM_TMP).
  work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/rkt-bench-netkvm.XXXXXX")
  dir=$work/data
  R=("$rkt" --dir="$dir" --insecure-options=image)
  srv=
  cleanup() {
    "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
    [ -n "$srv" ] && kill "$srv" 2>/dev/null
    ip link del qtap0 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  "$mkaci" --name example.com/bench-hello --label os=linux --label arch=amd64 \
    --exec /bin/hello --file "$hello:/bin/hello:0755" -o "$work/hello.aci"
  files=(--file /usr/bin/iperf3:/usr/bin/iperf3:0755 --file /bin/busybox:/bin/busybox:0755)
  for l in $(ldd /usr/bin/iperf3 | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }'); do
    files+=(--file "$(realpath "$l"):$l:0755")
  done
  "$mkaci" --name example.com/bench-iperf --label os=linux --label arch=amd64 \
    --exec "/bin/busybox sh -c" --env TMPDIR=/tmp --dir /tmp --dir /proc "${files[@]}" \
    -o "$work/iperf.aci"
  "${R[@]}" fetch "$work/hello.aci" >/dev/null
  "${R[@]}" fetch "$work/iperf.aci" >/dev/null
  "${R[@]}" run --stage1-path="$stage1k" --net=none example.com/bench-hello >/dev/null
  "${R[@]}" gc --grace-period=0s >/dev/null

  # 3. KVM pod start to exit, default vs none.
  kstart() { # net -> us
    local t0 t1
    t0=$(now_ns)
    "${R[@]}" run --stage1-path="$stage1k" --net="$1" example.com/bench-hello >/dev/null
    t1=$(now_ns)
    "${R[@]}" gc --grace-period=0s >/dev/null
    echo $(( (t1 - t0) / 1000 ))
  }
  kd=() kn=()
  for _ in $(seq 1 "$n_kvm"); do
    kd+=("$(kstart default)")
    kn+=("$(kstart none)")
  done
  mkd=$(median "${kd[@]}"); mkn=$(median "${kn[@]}")

  # 4. iperf3: the server in the bench namespace, a KVM pod, then the QEMU microvm.
  iperf3 -s >/dev/null 2>&1 &
  srv=$!
  sleep 0.5
  # The receiver-side Mbit/s of each iperf3 run in $1's output, in order (up, then down).
  rates() { awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }' "$1"; }
  # Bounded: a pod whose transfer stalls must not hang the bench (SIGTERM stops the VMM).
  timeout 400 "${R[@]}" run --stage1-path="$stage1k" --net=default example.com/bench-iperf -- \
    "/usr/bin/iperf3 -c 172.16.28.1 -t $secs -f m && /usr/bin/iperf3 -c 172.16.28.1 -t $secs -f m -R" \
    >"$work/kvm.out" 2>"$work/kvm.err" ||
    { echo "net.sh: the iperf3 pod failed" >&2; cat "$work/kvm.out" "$work/kvm.err" >&2; exit 1; }
  "${R[@]}" gc --grace-period=0s >/dev/null
  mapfile -t kr < <(rates "$work/kvm.out")
  ip tuntap add qtap0 mode tap
  ip addr add 192.168.77.1/24 dev qtap0
  ip link set qtap0 up
  qemu() { # extra virtio-net-device properties, output file
    timeout 300 qemu-system-x86_64 -accel kvm -cpu "host$BENCH_QEMU_TIMER" -M microvm -m 512 -smp 1 \
      -nodefaults -no-user-config -display none -no-reboot -serial stdio -kernel "$qkernel" \
      -append "console=ttyS0 quiet panic=-1 reboot=t noxsave root=r rootfstype=9p rootflags=trans=virtio,version=9p2000.L ro init=$PWD/bench/net-qemu-guest.sh -- $secs" \
      -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
      -device virtio-9p-device,fsdev=r,mount_tag=r \
      -netdev tap,id=n0,ifname=qtap0,script=no,downscript=no,vhost=off \
      -device "virtio-net-device,netdev=n0$1" >"$2" 2>&1 || true
  }
  qemu "" "$work/qemu.out"
  mapfile -t qr < <(rates "$work/qemu.out")
  # For the record: QEMU with every offload off, as our device offers none (not in the RATIO).
  qemu ",csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,mrg_rxbuf=off" \
    "$work/qemu-nooffload.out"
  mapfile -t qn < <(rates "$work/qemu-nooffload.out")
  if [ "${#kr[@]}" != 2 ] || [ "${#qr[@]}" != 2 ]; then
    echo "net.sh: iperf3 figures missing (kvm: ${kr[*]:-none}, qemu: ${qr[*]:-none})" >&2
    tail -n 30 "$work/kvm.out" "$work/qemu.out" >&2
    exit 1
  fi
  echo "KVM pod start to exit, --net=default    median $(ms_ "$mkd") ms (n=$n_kvm)"
  echo "KVM pod start to exit, --net=none       median $(ms_ "$mkn") ms (n=$n_kvm)"
  echo "ADDED_MS net_default_vs_none_kvm $(awk -v a="$mkd" -v b="$mkn" 'BEGIN { printf "%.1f", (a - b) / 1000 }')"
  echo "iperf3 guest->host: KVM pod ${kr[0]} Mbit/s, QEMU microvm ${qr[0]} Mbit/s (${secs} s)"
  echo "iperf3 host->guest: KVM pod ${kr[1]} Mbit/s, QEMU microvm ${qr[1]} Mbit/s (${secs} s)"
  echo "iperf3 QEMU microvm without offloads: guest->host ${qn[0]:-?} Mbit/s, host->guest ${qn[1]:-?} Mbit/s"
  echo "RATIO net_kvm_vs_qemu $(awk -v a="${kr[0]}" -v b="${qr[0]}" -v c="${kr[1]}" -v d="${qr[1]}" \
    'BEGIN { printf "%.2f", sqrt((a / b) * (c / d)) }')"
  exit 0
fi

work=$(mktemp -d /tmp/rkt-bench-net.XXXXXX)
dir=$work/data
R=("$rkt" --dir="$dir" --insecure-options=image)
cleanup() {
  "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
  ip netns del bench-script 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$mkaci" --name example.com/bench-hello --label os=linux --label arch=amd64 \
  --exec /bin/hello --file "$hello:/bin/hello:0755" -o "$work/hello.aci"
"${R[@]}" fetch "$work/hello.aci" >/dev/null
"${R[@]}" run --stage1-path="$stage1" --net=none example.com/bench-hello >/dev/null
"${R[@]}" gc --grace-period=0s >/dev/null

# 1a. ours: stage1-ns's own measurement (netns creation + every ADD + net-info.json).
ours=()
for _ in $(seq 1 "$n"); do
  us=$("${R[@]}" --debug run --stage1-path="$stage1" --net=default example.com/bench-hello 2>&1 >/dev/null |
       sed -n 's/.*networks set up in \([0-9]*\) us.*/\1/p' | tail -1)
  [ -n "$us" ] || { echo "net.sh: stage1-ns printed no setup time" >&2; exit 1; }
  ours+=("$us")
  "${R[@]}" gc --grace-period=0s >/dev/null
done

# 1b. the script: the same plugin call with the same config.
conf=$(cat <<JSON
{"cniVersion":"0.4.0","name":"default","type":"ptp","ipMasq":true,
 "ipam":{"type":"host-local","subnet":"172.16.28.0/24","routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$work/ipam"}}
JSON
)
cni() { # command
  CNI_COMMAND=$1 CNI_CONTAINERID=bench-script CNI_NETNS=/var/run/netns/bench-script CNI_IFNAME=eth0 \
    CNI_PATH=$plugins "$plugins/ptp" <<<"$conf" >/dev/null
}
script=()
for _ in $(seq 1 "$n"); do
  t0=$(now_ns)
  ip netns add bench-script
  ip -n bench-script link set lo up
  cni ADD
  t1=$(now_ns)
  script+=($(( (t1 - t0) / 1000 )))
  cni DEL
  ip netns del bench-script
done

# 2. pod start to exit, default vs none.
start() { # net -> us
  local t0 t1
  t0=$(now_ns)
  "${R[@]}" run --stage1-path="$stage1" --net="$1" example.com/bench-hello >/dev/null
  t1=$(now_ns)
  "${R[@]}" gc --grace-period=0s >/dev/null
  echo $(( (t1 - t0) / 1000 ))
}
dflt=() none=()
for _ in $(seq 1 "$n"); do
  dflt+=("$(start default)")
  none+=("$(start none)")
done

mo=$(median "${ours[@]}"); ms=$(median "${script[@]}")
md=$(median "${dflt[@]}"); mn=$(median "${none[@]}")
echo "net setup, stage1-ns (--net=default)   median $(ms_ "$mo") ms (n=$n)"
echo "net setup, shell script (same plugins)  median $(ms_ "$ms") ms (n=$n)"
echo "pod start to exit, --net=default        median $(ms_ "$md") ms (n=$n)"
echo "pod start to exit, --net=none           median $(ms_ "$mn") ms (n=$n)"
echo "ADDED_MS net_default_vs_none_ns $(awk -v a="$md" -v b="$mn" 'BEGIN { printf "%.1f", (a - b) / 1000 }')"
echo "RATIO net_setup_vs_script $(awk -v a="$mo" -v b="$ms" 'BEGIN { printf "%.2f", a / b }')"
