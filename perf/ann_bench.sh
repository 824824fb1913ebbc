#!/usr/bin/env bash
# ANN benchmark: Quiver's HNSW against hnswlib, Qdrant's engine (qdrant-edge-py) and faiss on the
# same data in the same run (../shared/bench/), with the same m / ef_construct, 2 build threads
# and one search thread. Prints build time, recall@10 and QPS at each ef, and the ratios.
#
#   perf/ann_bench.sh [preset] [metric] [m] [ef_construct]    (defaults: medium cosine 16 100)
#
# Presets are gen_dataset.py's: medium = 200k x 128 clustered, large = 100k x 768.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
preset=${1:-medium}
metric=${2:-cosine}
m=${3:-16}
efc=${4:-100}
shared="$root/../shared/bench"
venv="$root/target/ann-venv"
data="$root/target/ann-data/$preset"
out="$root/target/ann-results"
mkdir -p "$out"

if ! "$venv/bin/python" -c 'import hnswlib, qdrant_edge, faiss, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$shared/requirements.txt"
fi
if [ ! -f "$data/gt_$metric.npy" ]; then
  "$venv/bin/python" "$shared/gen_dataset.py" --preset "$preset" --out "$data" --force
fi

echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== quiver (in-process bench binary)"
QUIVER_ANN_DATA="$data" QUIVER_ANN_METRIC="$metric" QUIVER_ANN_M="$m" QUIVER_ANN_EF_CONSTRUCT="$efc" \
  QUIVER_ANN_THREADS=2 cargo bench -p quiver-benches --bench ann 2>&1 | tee "$out/quiver.txt"
tail -1 "$out/quiver.txt" > "$out/quiver.json"

echo "== peers (ann_peers.py)"
"$venv/bin/python" "$shared/ann_peers.py" --data "$data" --metric "$metric" --m "$m" --ef-construct "$efc" \
  --build-threads 2 --mode single --no-extend --json-out "$out/peers.json" | tee "$out/peers.txt"

echo "== comparison"
"$venv/bin/python" - "$out/quiver.json" "$out/peers.json" <<'PY'
import json, math, sys
ours = json.load(open(sys.argv[1]))
peers = json.load(open(sys.argv[2]))
target = peers.get("target", 0.95)

def at_target(points):
    """Best QPS among ef points reaching the target, and QPS interpolated to exactly the target
    (log QPS linear in recall between the bracketing points), as ann_peers.py does."""
    pts = sorted(points, key=lambda p: p["ef"])
    ok = [p for p in pts if p["recall"] >= target]
    best = max(ok, key=lambda p: p["qps"]) if ok else None
    interp = None
    for a, b in zip(pts, pts[1:]):
        if a["recall"] < target <= b["recall"]:
            t = (target - a["recall"]) / (b["recall"] - a["recall"])
            interp = math.exp(math.log(a["qps"]) + t * (math.log(b["qps"]) - math.log(a["qps"])))
    if pts and pts[0]["recall"] >= target:
        interp = pts[0]["qps"]
    return best, interp

rows = {"quiver": {"build_s": ours["build_s"], "points": ours["points"]}}
for name, r in peers["results"].items():
    rows[name] = {"build_s": r["build"]["build_s"], "points": r["points"]}
print(f"{'engine':<12} {'build s':>8}  " + "  ".join(f"ef{p['ef']:<4} recall / QPS" for p in ours["points"]))
for name, r in rows.items():
    cells = []
    for p in sorted(r["points"], key=lambda p: p["ef"]):
        cells.append(f"{p['recall']:.4f} / {p['qps']:>8.0f}")
    print(f"{name:<12} {r['build_s']:>8.1f}  " + "  ".join(cells))
summary = {n: at_target(r["points"]) for n, r in rows.items()}
q_best, q_interp = summary["quiver"]
peer_names = [n for n in rows if n != "quiver"]
best_peer = max(peer_names, key=lambda n: summary[n][1] or 0)
fastest_build = min(peer_names, key=lambda n: rows[n]["build_s"])
print(f"QPS at recall@10 = {target} (interpolated): " + ", ".join(f"{n} {summary[n][1] or 0:.0f}" for n in rows))
print(f"RATIO quiver / best peer ({best_peer}) QPS at recall {target} = {(q_interp or 0) / (summary[best_peer][1] or 1):.2f}"
      f"  |  best ef point >= target: quiver {q_best['qps'] if q_best else 0:.0f} (ef {q_best['ef'] if q_best else '-'}) vs "
      f"{best_peer} {summary[best_peer][0]['qps'] if summary[best_peer][0] else 0:.0f}")
print(f"RATIO build time quiver / fastest peer ({fastest_build}) = {rows['quiver']['build_s'] / rows[fastest_build]['build_s']:.2f}"
      f"  ({rows['quiver']['build_s']:.1f} s vs {rows[fastest_build]['build_s']:.1f} s)")
for n in peer_names:
    print(f"  vs {n}: QPS@{target} ratio {(q_interp or 0) / (summary[n][1] or 1):.2f}, build ratio {rows['quiver']['build_s'] / rows[n]['build_s']:.2f}")
PY
