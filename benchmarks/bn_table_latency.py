"""Latency cost of the per-configuration BatchNorm table (docs/shared-weights.md section 6).

Two format-2 slow_r50 bundles made by `bundle_memory.py` (random init, 224x224, T = 8): the plain
graph (uncalibrated checkpoint) and the graph with the (2^K, C) scale/shift tables (calibrated).
Both sessions in one process (ORT_ENABLE_ALL, memory pattern off, 1 intra-op thread), every
configuration at T' in {8, 4, 1}, batch 1, round-robin in shuffled order; the figure is the median
CPU time of the calling thread (with one intra-op thread ORT runs every op on it, so waiting for a
core under load is not counted), as docs/shared-weights.md measures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bn_table_latency.py --repeats 5
    (after: bundle_memory.py --arch slow_r50 and --arch slow_r50 --calibrated)
Results: benchmarks/results/bn_table_latency_slow_r50.{json,md}
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import RESULTS, command_line

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/bundle_memory")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    from ada3d_edge.bundle import open_bundle
    from ada3d_edge.runtime.backends.ort import OrtBackend
    from ada3d_edge.runtime.bench_report import machine_info
    from ada3d_edge.runtime.predictor import stage_mask_feed

    bundles = {"plain": open_bundle(Path(args.workdir) / "slow_r50" / "bundle"),
               "bn_table": open_bundle(Path(args.workdir) / "slow_r50_calibrated" / "bundle")}
    assert not bundles["plain"].manifest.backbone.bn_per_config and bundles["bn_table"].manifest.backbone.bn_per_config
    be = OrtBackend(intra_op_threads=1)
    for name, b in bundles.items():
        be.load(name, b.backbone_path, {"ort_session": {"graph_optimization_level": "ORT_ENABLE_ALL",
                                                          "enable_mem_pattern": False}})
    masks, frames = bundles["plain"].masks, (8, 4, 1)
    rng = np.random.default_rng(0)
    xs = {t: rng.standard_normal((1, 3, t, 224, 224), dtype=np.float32) for t in frames}
    jobs = [(g, m, t) for g in bundles for m in masks for t in frames]
    cpu = {j: [] for j in jobs}
    for r in range(args.warmup + args.repeats):
        for i in rng.permutation(len(jobs)):
            g, m, t = jobs[i]
            t0 = time.thread_time()
            be.run(g, {"clip": xs[t], "stage_mask": stage_mask_feed(m)})
            if r >= args.warmup:
                cpu[jobs[i]].append((time.thread_time() - t0) * 1e3)
    info = machine_info(be, 1)
    be.close()
    med = {f"{g} {m} {t}": statistics.median(v) for (g, m, t), v in cpu.items()}
    rows = [{"mask": m, "frames": t, "plain_ms": med[f"plain {m} {t}"], "bn_table_ms": med[f"bn_table {m} {t}"],
             "ratio": med[f"bn_table {m} {t}"] / med[f"plain {m} {t}"]} for m in masks for t in frames]
    res = {"command": command_line(), "repeats": args.repeats, "warmup": args.warmup, "rows": rows, "machine": info}
    (RESULTS / "bn_table_latency_slow_r50.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    from _common import machine_lines

    lines = ["# Cost of the per-configuration BN table: slow_r50, 224x224, ONNX Runtime CPU", "",
             f"Command: `{res['command']}`", "", *machine_lines(info),
             "- the CPU is shared with other agents; figures are medians of the calling thread's CPU time "
             f"over {args.repeats} round-robin rounds (after {args.warmup} warm-up), batch 1, 1 intra-op thread", "",
             "| mask | T' | plain graph ms | with BN table ms | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['mask']} | {r['frames']} | {r['plain_ms']:.0f} | {r['bn_table_ms']:.0f} | {r['ratio']:.3f} |"
              for r in rows]
    (RESULTS / "bn_table_latency_slow_r50.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
