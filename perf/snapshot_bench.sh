#!/usr/bin/env bash
# Snapshot benchmark against `cp -r` and `tar -cf` of the same segment files (same run), then a
# perf profile + flame graph of the snapshot path.
#
#   perf/snapshot_bench.sh [GiB] [out-dir]      (default 2 GiB; needs ~4x that free on the disk)
#
# The criterion bench prints the ratios (snapshot/cp, snapshot/tar, syscalls/io_uring) and the
# peak RSS growth during a snapshot; this script greps them out after the full run.
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-2}
out=${2:-target/perf}
mkdir -p "$out"
QUIVER_SNAPSHOT_GIB=$gib cargo bench -p quiver-benches --bench snapshot 2>&1 | tee "$out/snapshot_bench.txt"
echo "== summary"
grep -E "^(loaded|snapshot \(|RATIO)" "$out/snapshot_bench.txt"

if command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }; then
  command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
  bin=$(ls -t target/release/deps/snapshot-* | grep -v '\.d$' | head -1)
  QUIVER_SNAPSHOT_GIB=$gib perf record -e cpu-clock -F 999 -g -o "$out/snapshot.perf.data" -- "$bin" --bench --profile-time 10 quiver_io_uring
  perf script -i "$out/snapshot.perf.data" | inferno-collapse-perf > "$out/snapshot.folded"
  inferno-flamegraph < "$out/snapshot.folded" > "$out/snapshot.svg"
  echo "flame graph: $out/snapshot.svg"
fi
