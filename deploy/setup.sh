#!/usr/bin/env bash
# Installs what podswitch's build, main job and tests need on a fresh Debian 12
# machine that has rustup's toolchain. Idempotent: run it as often as you like.
set -euo pipefail

# tcpdump: reading pcaps. iproute2, iputils-ping, ethtool, iperf3, procps
# (sysctl): the namespace tests.
# clang, libbpf-dev, libelf-dev, zlib1g-dev, pkg-config: building the XDP
# programs (dataplane/build.rs) and libbpf-sys.
# nftables: the kernel baseline of podswitch-bench (kube-proxy nftables mode).
# containernetworking-plugins: host-local, the IPAM plugin podswitch-cni
# delegates to (/usr/lib/cni).
# curl: the lab's HTTP check (`lab exec POD -- curl http://web.demo/`).
packages=(tcpdump iproute2 iputils-ping ethtool iperf3 procps curl nftables containernetworking-plugins clang libbpf-dev libelf-dev zlib1g-dev pkg-config)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "setup: $tool not found: install Rust with rustup first" >&2; exit 1; }
done
