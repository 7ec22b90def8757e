#!/usr/bin/env bash
# Metadata-service latency from inside a pod (one run), all inside a bench-made "host" network
# namespace (the machine's interfaces, iptables and port 18112 are never touched):
#   a pod (`rkt run --net=default --mds-register`) runs http-lat (tests/src/bin/http-lat.rs),
#   which makes N sequential requests per series, each on a new connection, and prints
#   first/p50/p99/max in microseconds for
#     mds-uuid     GET  $AC_METADATA_URL/acMetadata/v1/pod/uuid       (rkt metadata-service)
#     static-uuid  GET  http://172.16.28.1:18113/uuid                  (a static file)
#     mds-sign     POST $AC_METADATA_URL/acMetadata/v1/pod/hmac/sign  content=...
#     static-sign  POST http://172.16.28.1:18113/uuid                  content=... (same file)
#   The static side is python3's http.server (ThreadingHTTPServer + SimpleHTTPRequestHandler,
#   what `python3 -m http.server` runs; POST answered like GET after reading the body), in the
#   same namespace, at the same address (the pod's gateway) as the service.
# The last line is `RATIO mds_p99_vs_static <x>`: the worse of mds-uuid/static-uuid and
# mds-sign/static-sign p99 (expected <= 1.0).
#
# Inputs (env): RKT_BIN (build/bin/rkt), STAGE1_ACI (build/stage1-ns.aci; build/stage1-kvm.aci
# under ci/nested-kvm for the KVM figure), HTTP_LAT (build/bin/http-lat), MKACI
# (build/bin/mkaci), N (requests per series, default 1000).
# Needs root, containernetworking-plugins, iptables and python3 (ci/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rkt=$(realpath "${RKT_BIN:-build/bin/rkt}")
stage1=$(realpath "${STAGE1_ACI:-build/stage1-ns.aci}")
lat=$(realpath "${HTTP_LAT:-build/bin/http-lat}")
mkaci=$(realpath "${MKACI:-build/bin/mkaci}")
n=${N:-1000}
for f in "$rkt" "$stage1" "$lat" "$mkaci" /usr/lib/cni/ptp /usr/lib/cni/host-local; do
  [ -f "$f" ] || { echo "mds.sh: missing $f (bash ci/build.sh; ci/deps.sh)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "mds.sh: needs python3" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "mds.sh: needs root" >&2; exit 1; }

if [ -z "${MDS_BENCH_INSIDE:-}" ]; then
  hostns=rkt-bench-mds-$$
  ip netns add "$hostns"
  trap 'ip netns del "$hostns" 2>/dev/null || true' EXIT
  # Network namespace only: pod netns bind mounts stay visible to later commands.
  MDS_BENCH_INSIDE=1 nsenter --net="/var/run/netns/$hostns" "$0" "$@"
  exit $?
fi
ip link set lo up

# Under ci/nested-kvm, pods need a plain tmpfs below their data dir (NESTED_KVM_TMP).
work=$(mktemp -d "${NESTED_KVM_TMP:-${TMPDIR:-/tmp}}/rkt-bench-mds.XXXXXX")
dir=$work/data
R=("$rkt" --dir="$dir" --insecure-options=image)
export RKT_METADATA_SOCKET=$work/mds.sock
svc= web=
cleanup() {
  "${R[@]}" gc --grace-period=0s >/dev/null 2>&1 || true
  [ -n "$svc" ] && kill "$svc" 2>/dev/null
  [ -n "$web" ] && kill "$web" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$mkaci" --name example.com/bench-http-lat --label os=linux --label arch=amd64 \
  --exec /bin/http-lat --file "$lat:/bin/http-lat:0755" -o "$work/lat.aci"
"${R[@]}" fetch "$work/lat.aci" >/dev/null

"$rkt" metadata-service --listen-port=18112 >/dev/null 2>"$work/mds.log" &
svc=$!
mkdir "$work/www"
printf '%s' 00000000-0000-0000-0000-000000000000 >"$work/www/uuid"
python3 - "$work/www" 18113 >/dev/null 2>&1 <<'PY' &
import functools, http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()
h = functools.partial(H, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), h).serve_forever()
PY
web=$!
for _ in $(seq 100); do
  [ -S "$RKT_METADATA_SOCKET" ] && python3 -c 'import socket; socket.create_connection(("127.0.0.1", 18113))' 2>/dev/null && break
  sleep 0.1
done
[ -S "$RKT_METADATA_SOCKET" ] || { echo "mds.sh: the metadata service did not start" >&2; cat "$work/mds.log" >&2; exit 1; }

t0=$(date +%s%N)
out=$("${R[@]}" run --stage1-path="$stage1" --net=default --mds-register example.com/bench-http-lat -- "$n" \
  mds-uuid GET mds:/acMetadata/v1/pod/uuid - \
  static-uuid GET http://172.16.28.1:18113/uuid - \
  mds-sign POST mds:/acMetadata/v1/pod/hmac/sign content=bench-mds-payload \
  static-sign POST http://172.16.28.1:18113/uuid content=bench-mds-payload) || {
  echo "mds.sh: the pod failed:" >&2; printf '%s\n' "$out" >&2; exit 1; }
t1=$(date +%s%N)
flavor=$(basename "$stage1" .aci)
printf '%s\n' "$out" | grep '^LAT ' | sed "s/^LAT /LAT $flavor /"
echo "pod run (4 x $n requests) took $(( (t1 - t0) / 1000000 )) ms"
p99() { printf '%s\n' "$out" | sed -n "s/^LAT $1 .* p99_us=\([0-9]*\) .*/\1/p"; }
mu=$(p99 mds-uuid) su=$(p99 static-uuid) ms=$(p99 mds-sign) ss=$(p99 static-sign)
[ -n "$mu$su$ms$ss" ] || { echo "mds.sh: no figures" >&2; exit 1; }
for s in uuid sign; do
  awk -v s=$s -v f="$flavor" -v a="$( [ $s = uuid ] && echo "$mu" || echo "$ms")" \
      -v b="$( [ $s = uuid ] && echo "$su" || echo "$ss")" \
      'BEGIN { printf "%s p99 %s: mds %.2f ms, static %.2f ms\n", f, s, a / 1000, b / 1000 }'
done
echo "RATIO mds_p99_vs_static $(awk -v a="$mu" -v b="$su" -v c="$ms" -v d="$ss" \
  'BEGIN { x = a / b; y = c / d; printf "%.2f", (x > y ? x : y) }')"
