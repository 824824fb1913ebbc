#!/usr/bin/env bash
# Profiles the exact-search benchmark with perf (software cpu-clock event: this VM exposes no
# hardware counters) and renders a flame graph with inferno.
#
#   perf/profile_search.sh [out-dir]       (QUIVER_BENCH_N=20000 for a quicker run)
#
# Needs: perf (Debian linux-perf) and inferno (cargo install inferno); both are installed here
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/perf}
mkdir -p "$out"
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
cargo bench -p quiver-benches --bench exact_search --no-run
bin=$(ls -t target/release/deps/exact_search-* | grep -v '\.d$' | head -1)
perf record -e cpu-clock -F 999 -g -o "$out/perf.data" -- "$bin" --bench --profile-time 10 single_query_top10
perf script -i "$out/perf.data" | inferno-collapse-perf > "$out/stacks.folded"
inferno-flamegraph < "$out/stacks.folded" > "$out/exact_search.svg"
echo "flame graph: $out/exact_search.svg"
