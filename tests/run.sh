#!/usr/bin/env bash
# The project's whole test run, as the README's second command: installs what the tests need
# (nothing beyond the Rust toolchain pinned in rust-toolchain.toml so far), then checks
# formatting, lints and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# cargo prints one "test result" line per test binary, the last often a doc-test run with
# nothing in it; close with the totals so the whole run is summarised in one line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
