#!/usr/bin/env bash
# The ort backend's two backbone layouts on one full-size bundle (issue 13): the one `If` graph
# (`--ort-layout graph`, the default) and the bundle's segment files chained (`--ort-layout segments`),
# each through `ada3d bench` (the runtime's own code): per-configuration latency at T' in {1, 4, 8}
# as a ratio to Upper in the same run, and PSS of all configurations loaded vs Upper alone (fresh
# processes). Writes $OUT.md from the two JSON files (no number typed by hand).
#
#   BUNDLE=/tmp/ada3d_full/slow_r50_measure benchmarks/ort_layouts.sh
#     (a random-init full-size bundle, e.g. the one benchmarks/full_size_trained_policy.py exports)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUNDLE=${BUNDLE:?set BUNDLE=a bundle directory}
REPEATS=${REPEATS:-5}
OUT=${OUT:-benchmarks/results/ort_layouts_$(basename "$BUNDLE")}
WORK=${WORK:-$(mktemp -d)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for layout in graph segments; do
  "$PY" -m ada3d_edge.cli bench "$BUNDLE" --ort-layout "$layout" --threads 1 --frames 1,4,8 --batch 1 \
    --repeats "$REPEATS" --warmup 1 --clips 2 --quiet --json "$WORK/$layout.json" > "$WORK/$layout.txt"
done
"$PY" - "$WORK" "$OUT" "$BUNDLE" "$REPEATS" <<'PYEOF'
import json, sys
from pathlib import Path

work, out, bundle, repeats = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {lay: json.loads((work / f"{lay}.json").read_text()) for lay in ("graph", "segments")}
m = res["graph"]["machine"]
def ratios(r):
    rows = [c for c in r["configs"] if c["batch"] == 1 and c["status"] == "ok"]
    up = {c["frames"]: c["latency_ms"]["p50"] for c in rows if c["mask"] == r["upper_mask"]}
    return {(c["mask"], c["frames"]): (c["latency_ms"]["p50"], c["latency_ms"]["p50"] / up[c["frames"]]) for c in rows}
rg, rs = ratios(res["graph"]), ratios(res["segments"])
lines = [f"# ONNX Runtime backbone layouts on `{bundle}` (CPU, 1 thread)", "",
         f"Command: `BUNDLE={bundle} REPEATS={repeats} benchmarks/ort_layouts.sh`, which ran:", ""]
lines += [f"- `{r['command']}`" for r in res.values()]
lines += ["", f"- machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m.get('onnxruntime')}, threads {m['threads']}, "
          f"load average at start {m.get('loadavg_at_start') or m.get('loadavg')}; date {m['date']}",
          f"- {res['graph']['arch']} at {res['graph']['crop_size']} px, T={res['graph']['num_frames']}; p50 of {repeats} "
          "round-robin rounds per layout (each layout is its own `ada3d bench` run: compare the ratios to Upper, "
          "measured within each run)", "",
          "| config | T' | graph ms | graph / its Upper | segments ms | segments / its Upper | segments / graph |",
          "|---|---|---|---|---|---|---|"]
for key in sorted(rg, key=lambda k: (k[0], -k[1]), reverse=True):
    (g, gr), (s, sr) = rg[key], rs[key]
    lines.append(f"| {key[0]} | {key[1]} | {g:.1f} | {gr:.2f} | {s:.1f} | {sr:.2f} | {s / g:.2f} |")
lines += ["", "| layout | all configurations loaded, PSS MiB | Upper alone, PSS MiB | ratio |", "|---|---|---|---|"]
for lay, r in res.items():
    mem = r["memory_mb"]
    lines.append(f"| {lay} | {mem['all_engines']:.0f} | {mem['upper_only']:.0f} | {mem['ratio']:.2f} |")
lines.append("")
Path(out).with_suffix(".md").write_text("\n".join(lines))
Path(out).with_suffix(".json").write_text(json.dumps(res, indent=1))
print("\n".join(lines))
PYEOF
