#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the nested-KVM harness need.
# Idempotent and quiet when everything is present. Needs root (apt-get).
set -euo pipefail
pkgs=(qemu-system-x86 linux-source bc bison flex libelf-dev libssl-dev cpio crun gcc make
      iproute2 procps kmod busybox-static python3 libc6-dev gnupg gpgv sqv
      containernetworking-plugins iptables   # CNI plugins land in /usr/lib/cni
      umoci skopeo                           # OCI test fixtures and bench/oci.sh
      docker-registry apache2-utils openssl  # docker:// tests: a real registry, htpasswd, JWTs
      xfsprogs                               # --disk-limit tests: XFS with project quotas
      golang-go golang-github-appc-spec-dev)  # appc's ACE validator and actool (ci/ace.sh)
[ "${1:-}" = "--bench" ] && pkgs+=(hyperfine time iperf3)   # iperf3: bench/net.sh
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests start their own registries on loopback; the package's service stays off.
  if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi
command -v cargo >/dev/null || { echo "ci/deps.sh: cargo not found (the Rust toolchain is part of the machine image)" >&2; exit 1; }
