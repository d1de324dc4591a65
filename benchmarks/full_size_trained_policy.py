"""Full size with a trained policy (issue 14, item 5): the demo's trained selection network chooses the
actions (kept frames, stage mask) for each of the demo's validation clips, and a full-size `slow_r50`
bundle at 224x224 (random weights: latency only, its predictions mean nothing) runs them through the
runtime (`AdaptivePredictor`), clip by clip interleaved with Upper on the same clip.

Adaptive = the full-size bundle's selection network (MobileNetV2 x1.0 @112 on the T frames, as the
paper's; its output is discarded, the demo policy's actions are used) + preprocessing + the backbone
for the demo policy's (mask, T'). Upper = preprocessing + all T frames, all stages 3D. Both go
through `predictor.select` / `predictor.run_fixed`, the code `ada3d run` uses, so engine switches
(another `stage_mask` and T' on every clip) and the real mix of configurations are in the numbers.
The demo clips (64 px) are resized to 256 px before the runtime's own crop and resize.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/full_size_trained_policy.py --demo-bundle runs/demo/bundle \
        --data runs/demo/data/val.txt
Results: benchmarks/results/full_size_trained_policy.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.bench_report import machine_info
from ada3d_edge.runtime.clips import list_clips
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.runtime.stats import latency_stats

SIDE = 256  # the demo clips are resized to this short side before the full-size bundle's crop


def full_size_bundle(work: Path, fold: str) -> Path:
    """A random-init slow_r50 format-2 bundle (224, T=8), 2D layout chosen as ``ada3d export`` would."""
    from bundle_memory import export_full_bundle

    out = work / f"slow_r50_{fold}"
    if not (out / "manifest.json").is_file():
        export_full_bundle("slow_r50", out, calibrated=False, fold=fold)
    return out


def demo_actions(bundle: str, data: str, root: str | None, clips: int, threads: int):
    """The demo policy's greedy actions and the clip for each validation video."""
    out = []
    with AdaptivePredictor(bundle, intra_op_threads=threads, warmup=False) as demo:
        for frames, _ in list_clips(demo.bundle, data, root or str(Path(data).parent), clips):
            u, masks, _ = demo.select([frames])
            out.append((frames, u[0], masks[0]))
    return out


def upscale(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    s = SIDE / min(h, w)
    size = (round(w * s), round(h * s))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-bundle", required=True, help="The demo's exported bundle (its trained policy decides).")
    ap.add_argument("--data", required=True, help="The demo's validation list (val.txt).")
    ap.add_argument("--root", default=None)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--fold", default="measure", help="2D layout of the full-size bundle (ada3d export --fold).")
    ap.add_argument("--work", default="/tmp/ada3d_full", help="Where the full-size bundle goes (large).")
    ap.add_argument("--out", default=str(RESULTS / "full_size_trained_policy"))
    args = ap.parse_args()

    info = machine_info(threads=args.threads)
    actions = demo_actions(args.demo_bundle, args.data, args.root, args.clips, args.threads)
    full = full_size_bundle(Path(args.work), args.fold)
    with AdaptivePredictor(str(full), intra_op_threads=args.threads) as pred:  # warms every (mask, T')
        b = pred.bundle
        t = pred.manifest.num_frames
        if len(b.masks[0]) != len(actions[0][2]):
            raise SystemExit(f"the demo policy has {len(actions[0][2])} stages, {full} has {len(b.masks[0])}")
        keep_all, upper = np.ones(t, bool), b.upper_mask
        policy_gflops = pred.manifest.policy.gflops_per_frame * t
        lat = {"adaptive": [], "upper": [], "selection": [], "adaptive_backbone": [], "upper_backbone": []}
        gf = {"adaptive": [], "upper": []}
        chosen: Counter[str] = Counter()
        clips = [(upscale(f), u, m) for f, u, m in actions]
        pred.select([clips[0][0]])
        for p in range(args.passes):
            for i, (frames, u, mask) in enumerate(clips):
                for which in (("adaptive", "upper") if (i + p) % 2 == 0 else ("upper", "adaptive")):
                    t0 = time.perf_counter()
                    if which == "adaptive":
                        _, _, sel_ms = pred.select([frames])  # the full-size selection net's cost; actions: the demo's
                        t1 = time.perf_counter()
                        r = pred.run_fixed(frames, u, mask)
                        lat["selection"].append((t1 - t0) * 1e3)
                        lat["adaptive_backbone"].append(r.timings_ms["backbone"])
                    else:
                        r = pred.run_fixed(frames, keep_all, upper)
                        lat["upper_backbone"].append(r.timings_ms["backbone"])
                    lat[which].append((time.perf_counter() - t0) * 1e3)
                    if p == 0:
                        gf[which].append(r.gflops_backbone + (policy_gflops if which == "adaptive" else 0.0))
                        if which == "adaptive":
                            chosen[f"{mask}/{int(u.sum())}"] += 1
        layout = pred.manifest.layout_choice
    a, up = latency_stats(lat["adaptive"]), latency_stats(lat["upper"])
    g_a, g_u = statistics.fmean(gf["adaptive"]), statistics.fmean(gf["upper"])
    lat_saving, gf_saving = 1 - a.mean / up.mean, 1 - g_a / g_u
    sel = statistics.fmean(lat["selection"])
    res = {"command": command_line(), "machine": info, "clips": len(clips), "passes": args.passes,
           "demo_bundle": args.demo_bundle, "full_bundle": str(full), "layout_choice": layout,
           "adaptive_ms": a.to_json(), "upper_ms": up.to_json(),
           "selection_ms_mean": sel, "adaptive_backbone_ms_mean": statistics.fmean(lat["adaptive_backbone"]),
           "upper_backbone_ms_mean": statistics.fmean(lat["upper_backbone"]),
           "gflops_adaptive": g_a, "gflops_upper": g_u, "policy_gflops": policy_gflops,
           "latency_saving": lat_saving, "gflops_saving": gf_saving,
           "saving_ratio": lat_saving / gf_saving if gf_saving > 0 else None,
           "selection_share_of_upper": sel / up.mean, "chosen": dict(chosen.most_common())}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    ok = lambda c: "met" if c else "missed"
    ratio = res["saving_ratio"]
    md = [f"# Full-size slow_r50 run by the demo's trained policy (ONNX Runtime CPU, {args.threads} thread)", "",
          f"Command: `{res['command']}`", "", *machine_lines(info),
          f"- actions: the demo bundle `{args.demo_bundle}`'s trained selection network on {len(clips)} clips of "
          f"`{args.data}` (greedy, as `ada3d run`); full-size bundle `{full}`: random-init slow_r50 + MobileNetV2 "
          f"x1.0 @112, 224x224, T={t}, 2D layout `--fold {args.fold}` "
          f"({'per configuration: ' + json.dumps(layout.get('modes')) if layout.get('modes') else layout})",
          "- **random weights: latency only**; the full-size predictions are meaningless. Each clip runs adaptive "
          "and Upper back to back (order alternating), through `AdaptivePredictor.select` + `run_fixed`.", "",
          "| | mean ms | p50 | p95 | GFLOPs/clip |", "|---|---|---|---|---|",
          f"| adaptive (selection net + preprocessing + backbone) | {a.mean:.1f} | {a.p50:.1f} | {a.p95:.1f} | {g_a:.2f} |",
          f"| Upper | {up.mean:.1f} | {up.p50:.1f} | {up.p95:.1f} | {g_u:.2f} |", "",
          f"- latency saving {100 * lat_saving:.1f}% for a GFLOPs saving of {100 * gf_saving:.1f}% (selection net "
          f"included): ratio **{ratio:.2f}** (target >= 0.9: {ok(ratio is not None and ratio >= 0.9)})",
          f"- selection network (its preprocessing included) {sel:.1f} ms = **{100 * sel / up.mean:.1f}%** of Upper "
          f"(target <= 3%: {ok(sel / up.mean <= 0.03)})",
          f"- backbone alone: adaptive {res['adaptive_backbone_ms_mean']:.1f} ms, Upper "
          f"{res['upper_backbone_ms_mean']:.1f} ms",
          f"- configurations chosen (mask/T': clips): " + ", ".join(f"{k}: {v}" for k, v in chosen.most_common()), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
