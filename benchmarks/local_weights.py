"""Branch-local weights in the one backbone graph (issue 13): latency and memory by budget.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/local_weights.py [--arch slow_r50] [--crop 224] [--rounds 4]

ONNX Runtime's NCHWc layout pass skips a conv whose weight is an outer-scope initializer (it looks
the weight up in the conv's own graph), so the folded 2D convs inside the shared graph's ``If``
branches run without it. ``--local-weights B`` (``shared_graph.localize_weights``) gives the
smallest segments, up to a share B of the weight bytes, their own copies inside their branches.
This script builds the shared graph (random init, ``--fold auto`` so the 2D variants are folded
Conv2d) at budgets 0, 0.1 and 1, and format-1 graphs (one per configuration) as the reference, then
(1) times every configuration at T' in {1, T/2, T}, round-robin in one process, medians of the thread
CPU time after one warm-up round, and (2) measures PSS/USS grown by loading each graph and running
every configuration at T' = 1 and T once, each in a fresh process. Latency only: the weights are
random. Writes benchmarks/results/local_weights_<arch>_<crop>.{md,json}.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines, time_layouts

from ada3d_edge.runtime.bench_report import machine_info

BUDGETS = (0.0, 0.1, 1.0)

MEMORY_PROBE = r'''
import json, sys
import numpy as np, onnxruntime as ort
from ada3d_edge.runtime.bench import process_memory_mb
path, masks, frames, crop = sys.argv[1], sys.argv[2].split(","), [int(f) for f in sys.argv[3].split(",")], int(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.enable_mem_pattern = False
before = process_memory_mb()
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
shared = len(sess.get_inputs()) > 1
for m in masks:
    for t in frames:
        feeds = {"clip": np.zeros((1, 3, t, crop, crop), np.float32)}
        if shared:
            feeds["stage_mask"] = np.array([int(c) for c in m], np.int64)
        sess.run(None, feeds)
after = process_memory_mb()
print(json.dumps({k: after[k] - before[k] for k in ("pss", "uss", "rss")}))
'''


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.enable_mem_pattern = 1, 1, False
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def memory(path: Path, masks, frames, crop: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), ",".join(masks), ",".join(map(str, frames)),
                          str(crop)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="slow_r50")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    import torch

    from ada3d_edge.export.onnx_export import export_backbone
    from ada3d_edge.export.shared_graph import (build_shared_backbone, fold_batchnorm, local_weight_segments,
                                                save_shared)
    from ada3d_edge.masks import all_masks
    from ada3d_edge.models import build_backbone

    info = machine_info(threads=1)
    torch.manual_seed(0)
    t, crop = args.frames, args.crop
    kw = {"widths": [16, 32, 64, 128]} if args.arch == "slow_tiny" else {}
    backbone = build_backbone(args.arch, num_classes=8 if args.arch == "slow_tiny" else 400, num_frames=t,
                              crop_size=crop, **kw).eval()
    k = backbone.num_stages_3d
    masks = all_masks(k) if k <= 2 else ["1" * k, "0" * k, "01" * (k // 2) + "0" * (k % 2)]
    upper = "1" * k
    tmp = Path(tempfile.mkdtemp(prefix="ada3d-local-"))
    graphs, chosen, export_s, files = {}, {}, {}, {}
    for b in BUDGETS:
        t0 = time.time()
        g, _ = build_shared_backbone(backbone, crop, 17, "auto", num_frames=t, local_budget=b)
        chosen[b] = local_weight_segments(g)
        files[b] = save_shared(g, tmp / f"shared_{b:g}.onnx")
        graphs[f"shared, budget {b:g}"] = files[b][0]
        export_s[b] = time.time() - t0
        del g
    folded = fold_batchnorm(backbone)
    for m in masks:
        graphs[("format 1", m)] = export_backbone(folded, m, tmp / f"format1_{m}.onnx", crop, num_frames=t)
    sessions = {key: _session(p) for key, p in graphs.items()}
    frames = sorted({1, t // 2, t})
    layouts = ["format 1"] + [f"shared, budget {b:g}" for b in BUDGETS]
    ms = time_layouts(sessions, layouts, masks, frames, crop, args.rounds, log=lambda line: print(line, flush=True))
    del sessions  # no session of this process may map a weights file while a probe measures PSS
    gc.collect()
    mem = {"format 1, Upper alone": memory(graphs[("format 1", upper)], [upper], [1, t], crop)}
    for b in BUDGETS:
        mem[f"shared, budget {b:g}"] = memory(graphs[f"shared, budget {b:g}"], masks, [1, t], crop)
    disk = {f"shared, budget {b:g}": sum(p.stat().st_size for p in files[b]) for b in BUDGETS}
    disk["format 1, Upper"] = graphs[("format 1", upper)].stat().st_size
    res = {"command": command_line(), "machine": info, "arch": args.arch, "crop": crop, "frames": t,
           "rounds": args.rounds, "masks": masks, "local_segments": {f"{b:g}": chosen[b] for b in BUDGETS},
           "export_seconds": {f"{b:g}": export_s[b] for b in BUDGETS}, "ms": ms, "memory_mib": mem, "disk_bytes": disk}
    out = RESULTS / f"local_weights_{args.arch}_{crop}"
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    get = lambda lay, m, f: ms[f"{lay}|{m}|{f}"]
    md = [f"# Branch-local weights in the one graph: {args.arch} @{crop}, T={t} (ONNX Runtime CPU, 1 thread)", "",
          f"Command: `{res['command']}`", "", *machine_lines(info),
          f"- random-init weights (latency only), batch 1, `--fold auto`; {args.rounds} shuffled round-robin rounds "
          "after one warm-up round, medians of the calling thread's CPU time",
          "- segments with their own weights: " + "; ".join(f"budget {b:g}: {', '.join(chosen[b]) or 'none'}"
                                                            for b in BUDGETS), "",
          "Each cell: ms, then (ratio to the configuration's format-1 graph; ratio to Upper's format-1 graph) "
          "at the same T'.", "",
          "| config | T' | format 1 | " + " | ".join(layouts[1:]) + " |", "|---|---|---|" + "---|" * len(BUDGETS)]
    worst = {lay: (0.0, "") for lay in layouts[1:]}
    worst_up = {lay: (0.0, "") for lay in layouts[1:]}
    for m in masks:
        for f in frames:
            ref, up = get("format 1", m, f), get("format 1", upper, f)
            cells = [f"{ref:.1f}"]
            for lay in layouts[1:]:
                v = get(lay, m, f)
                cells.append(f"{v:.1f} ({v / ref:.2f}; {v / up:.2f})")
                worst[lay] = max(worst[lay], (v / ref, f"{m} T'={f}"))
                worst_up[lay] = max(worst_up[lay], (v / up, f"{m} T'={f}"))
            md.append(f"| {m} | {f} | " + " | ".join(cells) + " |")
    up_mem = mem["format 1, Upper alone"]["pss"]
    ran = "all configs" if len(masks) == 2 ** k else ", ".join(masks)
    md += ["", f"| layout | worst / own format-1 graph | worst / Upper | PSS grown, graph loaded, {ran} run (MiB) "
           "| / format-1 Upper alone | USS (MiB) | disk / format-1 Upper file |", "|---|---|---|---|---|---|---|"]
    md.append(f"| format 1, Upper alone | 1.00 | 1.00 | {up_mem:.0f} | 1.00 | "
              f"{mem['format 1, Upper alone']['uss']:.0f} | 1.00 |")
    for lay in layouts[1:]:
        md.append(f"| {lay} | {worst[lay][0]:.2f} ({worst[lay][1]}) | {worst_up[lay][0]:.2f} ({worst_up[lay][1]}) | "
                  f"{mem[lay]['pss']:.0f} | {mem[lay]['pss'] / up_mem:.2f} | {mem[lay]['uss']:.0f} | "
                  f"{disk[lay] / disk['format 1, Upper']:.2f} |")
    md += ["", "Upper timed against itself on this machine moves by several percent between rounds; "
           "read ratios near 1 with that in mind.", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
