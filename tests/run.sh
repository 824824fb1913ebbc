#!/usr/bin/env bash
# The project's whole test run, as the README's second command. On a fresh machine it installs
# what the tests need (a Python virtualenv with the official qdrant-client, numpy, pytest and
# moto's S3 server), then checks formatting and lints, runs every Rust test of the workspace,
# builds the server and runs the Python compatibility suite against it. It ends with one
# "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "== toolchain"
cargo --version
rustc --version

echo "== python test environment (.venv)"
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/moto_server ] \
   || ! .venv/bin/python -c 'import qdrant_client, numpy, pytest, moto, flask' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
# The S3 tests start moto_server (an S3 server from PyPI) from here; s3s-fs runs in-process.
export PATH="$root/.venv/bin:$PATH"
export MOTO_SERVER="$root/.venv/bin/moto_server"
.venv/bin/python -c 'import qdrant_client, numpy; print("qdrant-client", qdrant_client.__version__ if hasattr(qdrant_client, "__version__") else "?", "numpy", numpy.__version__)' || true

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test --workspace"
cargo test --workspace --locked 2>&1 | tee -a "$log"

echo "== python compatibility suite (official qdrant-client against target/debug/quiver)"
# `cargo test` built the server for its integration tests (target/debug/quiver, with the same
# features); a separate `cargo build` would resolve features differently and rebuild half the
# dependency tree.
[ -x target/debug/quiver ] || { echo "target/debug/quiver was not built by cargo test" >&2; exit 1; }
QUIVER_BIN="$root/target/debug/quiver" .venv/bin/python -m pytest -q tests/python 2>&1 | tee -a "$log"

# Close with the totals of every runner, so the whole run is summarised in one line.
awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
  /^[0-9]+ (passed|failed)/ && / in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed,?$/) p += $(i-1); if ($(i) ~ /^failed,?$/) f += $(i-1) } }
  END { printf "%d passed, %d failed\n", p, f }' "$log"
