#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints,
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --release
