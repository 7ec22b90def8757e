#!/usr/bin/env bash
# The main job: fetch the example image into the store, then run it in a KVM pod. On hosts whose
# /dev/kvm cannot boot Linux (PVM, no vmx/svm), the pod runs inside the nested-KVM harness.
set -euo pipefail
cd "$(dirname "$0")/.."
rkt=build/bin/rkt
dir=${RKT_DEMO_DIR:-/var/lib/rkt}
echo "==> rkt fetch build/example.aci" >&2
"$rkt" --dir="$dir" --insecure-options=image fetch build/example.aci
echo "==> rkt run --stage1=kvm example.com/hello (via ci/nested-kvm when needed)" >&2
exec ci/nested-kvm "$PWD/$rkt" --dir=/var/lib/rkt --insecure-options=image run \
  --stage1-path="$PWD/build/stage1-kvm.aci" "$PWD/build/example.aci" -- "from the README's main command"
