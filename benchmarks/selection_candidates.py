"""Lighter selection networks for the demo (issue 14 item 2): the split selection network as the
runtime runs it (``policy_features.onnx`` on the T frames, numpy mean, the heads in numpy from the
manifest's ``head_bias``) for
MobileNetV2 variants set by the recipe keys ``model.selection_width``, ``model.policy_size``,
``model.selection_depth``, ``model.selection_groups`` and ``model.selection_last_channels``, against
the demo backbone's Upper engine (mask 11 on T frames, the shared graph with ``--fold none``),
round-robin in one process.

Two timings per candidate: alone (CPU time of the calling thread, the network back to back with
itself) and right after an Upper engine call (wall time), which is how the predictor runs it: the
backbone between two windows evicts the small network from the caches, and that costs it about as
much again at the demo's size.

Random weights (latency only); ONNX Runtime CPU, 1 intra-op thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/selection_candidates.py --rounds 200
Results: benchmarks/results/selection_candidates_cpu.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.bench_report import machine_info

# (width, policy px, blocks per group at most, groups kept, last channels): MobileNetV2's 17 blocks first
CANDIDATES = [(0.35, 32, None, None, None), (0.35, 32, 1, None, None), (0.35, 32, 1, 4, None), (0.35, 32, 1, 3, None),
              (0.35, 32, 1, 4, 256), (0.35, 32, 1, 4, 128), (0.35, 24, 1, 4, 256), (0.25, 24, 1, 4, 128),
              (0.35, 16, 1, 3, 256), (0.5, 32, 1, 3, None)]


def _session(path: Path):
    from ada3d_edge.export.verify import ort_session

    return ort_session(path, enable_mem_pattern=False, threads=1)


def name_of(width, size, depth, groups, last) -> str:
    return (f"width {width}, {size} px" + (f", depth {depth}" if depth else "")
            + (f", {groups} groups" if groups else "") + (f", last {last}" if last else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--out", default=str(RESULTS / "selection_candidates_cpu"))
    args = ap.parse_args()

    import torch

    from ada3d_edge.export.onnx_export import export_policy_split, head_bias
    from ada3d_edge.runtime.split_heads import numpy_heads
    from ada3d_edge.export.shared_graph import build_shared_backbone, mask_array, save_shared
    from ada3d_edge.flops import backbone_macs, selection_macs
    from ada3d_edge.models import SelectionNet, build_backbone
    from ada3d_edge.models.specs import selection_spec

    info = machine_info(threads=1)
    torch.manual_seed(0)
    t, crop = 8, 64
    backbone = build_backbone("slow_tiny", num_classes=8, num_frames=t, crop_size=crop, widths=[16, 32, 64, 128]).eval()
    k = backbone.num_stages_3d
    tmp = Path(tempfile.mkdtemp(prefix="ada3d-sel-"))
    graph, _ = build_shared_backbone(backbone, crop, 17, "none", num_frames=t)
    bb = _session(save_shared(graph, tmp / "backbone.onnx")[0])
    xb = np.random.rand(1, 3, t, crop, crop).astype(np.float32)
    upper_feeds = {"clip": xb, "stage_mask": mask_array("1" * k)}
    upper_gmacs = backbone_macs(backbone.spec, "1" * k, t, crop) / 1e9
    runs, info_rows = {"Upper engine (11, T=8)": lambda: bb.run(None, upper_feeds)}, {}
    for cand in CANDIDATES:
        width, size, depth, groups, last = cand
        spec = selection_spec(width, size, depth, groups, last)
        net = SelectionNet(t, k, spec=spec).eval()
        name = name_of(*cand)
        fpath, _ = export_policy_split(net, tmp / f"f_{len(runs)}.onnx", tmp / f"h_{len(runs)}.onnx", size)
        fs, bias = _session(fpath), np.asarray(head_bias(net), np.float32)
        x = np.random.rand(t, 3, size, size).astype(np.float32)

        def run(fs=fs, bias=bias, x=x):
            feats = fs.run(None, {"frames": x})[0]
            numpy_heads(np.add.reduce(feats, axis=0, keepdims=True) / np.float32(t), bias, t)

        runs[name] = run
        blocks = sum(n for _, _, n, _ in spec.settings)
        info_rows[name] = {"width": width, "policy_size": size, "depth": depth, "groups": groups,
                           "last_channels": last, "blocks": blocks,
                           "gmacs": selection_macs(spec, frames=t, size=size, num_stages=k, num_frames_out=t) / 1e9}
    samples = {n: [] for n in runs}
    after_upper = {n: [] for n in info_rows}
    names = list(runs)
    order = random.Random(0)
    for r in range(args.rounds + 5):
        order.shuffle(names)
        for n in names:
            c0 = time.thread_time()
            runs[n]()
            if r >= 5:
                samples[n].append((time.thread_time() - c0) * 1e3)
        for n in names:  # as in the predictor: the selection net right after a backbone call
            if n in after_upper:
                runs["Upper engine (11, T=8)"]()
                t0 = time.perf_counter()
                runs[n]()
                if r >= 5:
                    after_upper[n].append((time.perf_counter() - t0) * 1e3)
    ms = {n: statistics.median(v) for n, v in samples.items()}
    up = ms["Upper engine (11, T=8)"]
    for n, d in info_rows.items():
        cold = statistics.median(after_upper[n])
        d.update(ms=ms[n], latency_vs_upper=ms[n] / up, gmacs_vs_upper=d["gmacs"] / upper_gmacs,
                 ms_after_upper=cold, after_upper_vs_upper=cold / up)
    res = {"command": command_line(), "machine": info, "upper_ms": up, "upper_gmacs": upper_gmacs,
           "rounds": args.rounds, "candidates": info_rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = ["# Lighter selection networks at the demo's scale (ONNX Runtime CPU, 1 thread)", "",
          f"Command: `{res['command']}`", "", *machine_lines(info),
          f"- random weights (latency only); {args.rounds} shuffled round-robin rounds after 5 warm-up rounds, "
          "medians; 'alone': the calling thread's CPU time, the candidates back to back; 'after Upper': wall "
          "time right after an Upper engine call, as the predictor runs it (both over Upper's CPU time); the "
          "split network as `ada3d run` calls it (features of the 8 frames, numpy mean, numpy heads)",
          f"- Upper: the demo's `slow_tiny` backbone (widths 16-128, 64 px, T=8), mask 11: {up:.3f} ms, "
          f"{upper_gmacs:.4f} GMACs. Paper: MobileNetV2 @112 is ~1.6% of slow_r50 @224 GFLOPs.", "",
          "| selection net (recipe: width, policy_size, selection_depth, selection_groups, "
          "selection_last_channels) | blocks | GMACs | GMACs / Upper | ms alone | alone / Upper | "
          "ms after Upper | after Upper / Upper |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {n} | {d['blocks']} | {d['gmacs']:.4f} | {d['gmacs_vs_upper']:.3f} | {d['ms']:.3f} | "
           f"{d['latency_vs_upper']:.3f} | {d['ms_after_upper']:.3f} | **{d['after_upper_vs_upper']:.3f}** |"
           for n, d in info_rows.items()]
    md.append("")
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
