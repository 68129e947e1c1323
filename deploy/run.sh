#!/usr/bin/env bash
# The main job: builds podswitch and its CNI plugin, brings up the lab (two
# nodes, the built-in example, every pod attached by podswitch-cni) and
# runs the demo tour on it. The lab stays up to explore
# (`podswitch lab status|probe|matrix|exec`); `podswitch lab down` removes
# it. A lab left from an earlier run is taken down first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo build --release --quiet --bin podswitch --bin podswitch-cni
bin=./target/release/podswitch
"$bin" lab down --name "${LAB_NAME:-lab}" >/dev/null
"$bin" lab up --name "${LAB_NAME:-lab}"
echo
exec "$bin" lab demo --name "${LAB_NAME:-lab}" "$@"
