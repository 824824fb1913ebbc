#!/usr/bin/env bash
# S3 snapshot upload benchmark: Quiver's streamed multipart upload of a ≥ 2 GiB collection
# snapshot against boto3's multipart upload of the same bytes (../shared/bench/s3_baseline.py),
# same server, part size and concurrency, same run. Prints both throughputs, the ratio and
# Quiver's peak RSS growth.
#
#   perf/s3_bench.sh [GiB] [part MiB] [parts in flight]     (defaults 2, 64, 4)
#
# The server is s3s-fs 0.14.1 (a Rust S3 server on the local disk), run as its own process;
# set QUIVER_S3_ENDPOINT (+ QUIVER_S3_ACCESS_KEY / QUIVER_S3_SECRET_KEY) to use another one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export QUIVER_S3_GIB=${1:-2} QUIVER_S3_PART_MIB=${2:-64} QUIVER_S3_CONCURRENCY=${3:-4}

if [ -z "${QUIVER_S3_ENDPOINT:-}" ]; then
  tools="$root/target/tools"
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools"
  fi
  export S3S_FS_BIN="$tools/bin/s3s-fs"
fi

venv="$root/target/bench-venv"
if ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check boto3==1.44.8 botocore==1.44.8
fi
export QUIVER_BENCH_PYTHON="$venv/bin/python"
export QUIVER_S3_BASELINE="$root/../shared/bench/s3_baseline.py"

echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p quiver-benches --bench s3_upload 2>&1 | tee target/s3_bench.txt
echo "== summary"
grep -E "^(archive|round|RATIO)" target/s3_bench.txt
