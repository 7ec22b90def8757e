#!/usr/bin/env bash
# ns pod networking benchmarks (one run each, N samples, medians), all inside a bench-made
# "host" network namespace (the machine's interfaces and iptables are never touched):
#  1. network setup of an ns pod with --net=default (netns + ptp/host-local/ipMasq ADD, as
#     stage1-ns logs it with --debug) vs a shell script doing the same: `ip netns add`, the
#     same plugin ADD with the same config (teardown outside the interval both sides);
#  2. pod start-to-exit of the hello image with --net=default vs --net=none (added ms).
# The last line is `RATIO net_setup_vs_script <ours/script>` (expected <= 1.3).
#
# Inputs (env): RKT_BIN (build/bin/rkt), RKT_STAGE1_NS_ACI (build/stage1-ns.aci),
# HELLO_BIN (build/bin/hello), MKACI (build/bin/mkaci), N (samples per side, default 10).
# Needs root, containernetworking-plugins and iptables (ci/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rkt=$(realpath "${RKT_BIN:-build/bin/rkt}")
stage1=$(realpath "${RKT_STAGE1_NS_ACI:-build/stage1-ns.aci}")
hello=$(realpath "${HELLO_BIN:-build/bin/hello}")
mkaci=$(realpath "${MKACI:-build/bin/mkaci}")
n=${N:-10}
plugins=/usr/lib/cni
for f in "$rkt" "$stage1" "$hello" "$mkaci" "$plugins/ptp" "$plugins/host-local"; do
  [ -f "$f" ] || { echo "net.sh: missing $f (make build; ci/deps.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "net.sh: needs root" >&2; exit 1; }

if [ -z "${NET_BENCH_INSIDE:-}" ]; then
  hostns=rkt-bench-net-$$
  ip netns add "$hostns"
  trap 'ip netns del "$hostns" 2>/dev/null || true' EXIT
  # Network namespace only: pod netns bind mounts stay visible to later commands.
  NET_BENCH_INSIDE=1 nsenter --net="/var/run/netns/$hostns" "$0" "$@"
  exit $?
fi
ip link set lo up

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

now_ns() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

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
ms_() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
echo "net setup, stage1-ns (--net=default)   median $(ms_ "$mo") ms (n=$n)"
echo "net setup, shell script (same plugins)  median $(ms_ "$ms") ms (n=$n)"
echo "pod start to exit, --net=default        median $(ms_ "$md") ms (n=$n)"
echo "pod start to exit, --net=none           median $(ms_ "$mn") ms (n=$n)"
echo "ADDED_MS net_default_vs_none_ns $(awk -v a="$md" -v b="$mn" 'BEGIN { printf "%.1f", (a - b) / 1000 }')"
echo "RATIO net_setup_vs_script $(awk -v a="$mo" -v b="$ms" 'BEGIN { printf "%.2f", a / b }')"
