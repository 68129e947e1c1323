#!/usr/bin/env bash
# The main job: builds podswitch and runs its built-in self-check on every core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo build --release --quiet --bin podswitch
exec ./target/release/podswitch selftest "$@"
