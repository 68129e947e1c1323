#!/usr/bin/env bash
# Installs podswitch-cni on a node the way container runtimes (containerd,
# CRI-O) find CNI plugins:
#   - the plugin binary in $CNI_BIN_DIR (default /opt/cni/bin), beside
#     host-local (linked from Debian's containernetworking-plugins,
#     /usr/lib/cni, when it is not there already);
#   - the network config list $CNI_CONF_DIR/10-podswitch.conflist (default
#     /etc/cni/net.d), from deploy/cni/10-podswitch.conflist with this node's
#     pod CIDR and agent socket.
# Usage: deploy/cni/install.sh POD_CIDR [AGENT_SOCKET]
# Run it after building (`cargo build --release -p cni`). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pod_cidr="${1:?usage: install.sh POD_CIDR [AGENT_SOCKET] (e.g. 10.244.1.0/24)}"
socket="${2:-/run/podswitch/agent.sock}"
bin_dir="${CNI_BIN_DIR:-/opt/cni/bin}"
conf_dir="${CNI_CONF_DIR:-/etc/cni/net.d}"
plugin="${PODSWITCH_CNI:-${CARGO_TARGET_DIR:-$root/target}/release/podswitch-cni}"

if ! [[ "$pod_cidr" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]]; then
  echo "install.sh: POD_CIDR $pod_cidr is not an IPv4 CIDR like 10.244.1.0/24" >&2
  exit 2
fi
if [ ! -x "$plugin" ]; then
  echo "install.sh: $plugin not found: run cargo build --release -p cni first" >&2
  exit 1
fi
mkdir -p "$bin_dir" "$conf_dir"
install -m 0755 "$plugin" "$bin_dir/podswitch-cni"
if [ ! -e "$bin_dir/host-local" ]; then
  if [ -x /usr/lib/cni/host-local ]; then
    ln -s /usr/lib/cni/host-local "$bin_dir/host-local"
  else
    echo "install.sh: host-local not found: apt-get install containernetworking-plugins" >&2
    exit 1
  fi
fi
tmp="$(mktemp "$conf_dir/.10-podswitch.XXXXXX")"
sed -e "s#10.244.1.0/24#$pod_cidr#" -e "s#/run/podswitch/agent.sock#$socket#" \
  "$here/10-podswitch.conflist" >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$conf_dir/10-podswitch.conflist"
echo "installed $bin_dir/podswitch-cni and $conf_dir/10-podswitch.conflist (pod CIDR $pod_cidr)"
