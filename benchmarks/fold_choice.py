"""The 2D layout of degraded stages, measured (issues 13 and 14): per configuration and T', the latency
of the one-graph backbone (bundle format 2) exported with `--fold auto` (degraded stages and the 2D
tail as Conv2d over folded frames), `--fold none` (nothing folded: Conv3d(1, k, k)) and `--fold
measure` (per configuration the faster of the two, timed at export), against today's reference, one
graph per configuration (format 1, `--fold auto`, ORT_ENABLE_ALL), round-robin in one process.

Random-init weights (latency only), batch 1, ONNX Runtime CPU, 1 intra-op thread, CPU time of the
calling thread (ORT runs every op on it with 1 thread, so waiting for a core under load is not counted).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fold_choice.py --arch slow_tiny --crop 64 --rounds 30   # the demo's scale
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fold_choice.py --arch slow_r50 --crop 224 --rounds 5
Results: benchmarks/results/fold_choice_<arch>_<crop>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines, time_layouts

from ada3d_edge.runtime.bench_report import machine_info

DEMO_WIDTHS = [16, 32, 64, 128]  # train/demo.yaml's slow_tiny


def _session(path: Path, mem_pattern: bool):
    from ada3d_edge.export.verify import ort_session

    return ort_session(path, enable_mem_pattern=mem_pattern, threads=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="slow_tiny")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--masks", nargs="*", default=None, help="Configurations to time (default: all).")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--measure-seconds", type=float, default=30.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from ada3d_edge.export.fold_choice import measure_fold_choice
    from ada3d_edge.export.onnx_export import export_backbone
    from ada3d_edge.export.shared_graph import build_shared_backbone, fold_batchnorm, save_shared
    from ada3d_edge.masks import all_masks
    from ada3d_edge.models import build_backbone

    info = machine_info(threads=1)
    torch.manual_seed(0)
    kw = {"widths": DEMO_WIDTHS} if args.arch == "slow_tiny" else {}
    t = args.frames
    backbone = build_backbone(args.arch, num_classes=8 if args.arch == "slow_tiny" else 400, num_frames=t,
                              crop_size=args.crop, **kw).eval()
    k = backbone.num_stages_3d
    masks = args.masks or all_masks(k)
    upper = "1" * k
    if upper not in masks:
        masks = [upper, *masks]
    tmp = Path(tempfile.mkdtemp(prefix="ada3d-fold-bench-"))
    t0 = time.time()
    choice = measure_fold_choice(backbone, args.crop, 17, t, budget_s=args.measure_seconds)
    measure_s = time.time() - t0
    sessions, export_s = {}, {}
    for name, fold in (("shared auto", "auto"), ("shared none", "none"), ("shared measure", choice.modes)):
        t0 = time.time()
        graph, _ = build_shared_backbone(backbone, args.crop, 17, fold, num_frames=t)
        path = save_shared(graph, tmp / f"{name.replace(' ', '_')}.onnx")[0]
        export_s[name] = time.time() - t0
        sessions[name] = _session(path, mem_pattern=False)
    folded = fold_batchnorm(backbone)
    for m in masks:
        path = export_backbone(folded, m, tmp / f"format1_{m}.onnx", args.crop, num_frames=t)
        sessions[("format 1", m)] = _session(path, mem_pattern=True)  # ORT's defaults, as format 1 ran
    layouts = ["format 1", "shared auto", "shared none", "shared measure"]
    frames = sorted({1, t // 2, t})
    ms = time_layouts(sessions, layouts, masks, frames, args.crop, args.rounds)
    get = lambda lay, m, f: ms[f"{lay}|{m}|{f}"]
    res = {"command": command_line(), "machine": info, "arch": args.arch, "crop": args.crop, "frames": t,
           "rounds": args.rounds, "choice": choice.to_dict(), "measure_seconds": measure_s, "export_seconds": export_s,
           "ms": ms}
    out = Path(args.out or RESULTS / f"fold_choice_{args.arch}_{args.crop}")
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = [f"# 2D layout of degraded stages: {args.arch} @{args.crop}, T={t} (ONNX Runtime CPU, 1 thread)", "",
          f"Command: `{res['command']}`", "", *machine_lines(info),
          f"- random-init weights (latency only), batch 1, {args.rounds} shuffled round-robin rounds after one "
          "warm-up round, medians of the calling thread's CPU time",
          f"- `--fold measure` chose (in {measure_s:.0f} s, {choice.rounds} rounds): "
          + ", ".join(f"{m}: {v}" for m, v in choice.modes.items()), "",
          "Each cell: ms, then in brackets the ratio to the same configuration's format-1 graph at the same T' "
          "and the ratio to Upper's format-1 graph at the same T'.", "",
          "| config | T' | format 1 | shared auto | shared none | shared measure |", "|---|---|---|---|---|---|"]
    worst = {lay: (0.0, "") for lay in layouts[1:]}
    worst_up = {lay: (0.0, "") for lay in layouts[1:]}
    for m in masks:
        for f in frames:
            ref, up = get("format 1", m, f), get("format 1", upper, f)
            cells = [f"{ref:.3f} ({ref / up:.2f} of Upper)"]
            for lay in layouts[1:]:
                v = get(lay, m, f)
                cells.append(f"{v:.3f} ({v / ref:.2f}; {v / up:.2f})")
                worst[lay] = max(worst[lay], (v / ref, f"{m} T'={f}"))
                worst_up[lay] = max(worst_up[lay], (v / up, f"{m} T'={f}"))
            md.append(f"| {m} | {f} | " + " | ".join(cells) + " |")
    md += ["", "| layout | worst ratio to the configuration's format-1 graph | worst ratio to Upper at the same T' |",
           "|---|---|---|"]
    md += [f"| {lay} | {worst[lay][0]:.2f} ({worst[lay][1]}) | {worst_up[lay][0]:.2f} ({worst_up[lay][1]}) |"
           for lay in layouts[1:]]
    md += ["", "Export time of the shared graph (s): " + ", ".join(f"{k} {v:.1f}" for k, v in export_s.items())
           + f"; the measurement of `--fold measure` took {measure_s:.1f} s more.", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
