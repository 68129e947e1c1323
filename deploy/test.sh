#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints,
# then runs every test of the workspace and prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
bash deploy/kube-apiserver.sh
# libcni 1.1's driver for podswitch/tests/libcni.rs (cached outside the checkout).
bash deploy/libcni-driver.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --profile ci --no-fail-fast 2>&1 | tee "$log" || status=$?
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
