"""Memory (PSS, USS) of a format-2 bundle on ONNX Runtime CPU: every configuration loaded vs Upper.

Random-init full-size backbone (224x224, T = 8) and a MobileNetV2 selection net, exported with the
exporter's functions (`build_shared_backbone` + `save_backbone_files`, the same manifest as
`ada3d export`). Each row is a fresh spawned process that loads and runs its models at batch 1 at
every T' 8..1, then reads its own /proc/self/smaps_rollup (`runtime.bench.process_memory_mb`):

- `all`: the selection net + the one backbone session, every configuration (`ada3d bench`'s probe);
- `upper`: the one backbone session, only Upper run (`ada3d bench`'s probe);
- `upper_file`: today's per-configuration Upper graph (`export_backbone`, format 1) in its own
  session at ORT's defaults: the baseline of issue 13's target (all configurations <= 1.3x of it).

``--calibrated`` gives the backbone per-configuration BN statistics (random, all configurations
calibrated), so the graph holds the (2^K, C) scale/shift tables the recipes' checkpoints need.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bundle_memory.py --arch slow_r50 [--calibrated]
Results: benchmarks/results/bundle_memory_<arch>[_calibrated].{json,md}
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

from _common import RESULTS, command_line

CROP, T, POLICY = 224, 8, 112


def export_full_bundle(arch: str, out: Path, calibrated: bool, fold: str = "auto") -> dict:
    """Random-init ``arch`` bundle (format 2) at ``out`` + today's Upper file beside it; sizes and times.
    ``fold``: the exporter's fold mode, or "measure" (each configuration's layout timed here, as
    ``ada3d export`` does by default)."""
    import torch

    from ada3d_edge.bundle import Manifest, PolicyEntry, write_manifest
    from ada3d_edge.export.exporter import backbone_entry
    from ada3d_edge.export.onnx_export import export_backbone, export_policy
    from ada3d_edge.export.shared_graph import build_shared_backbone, config_graphs, save_backbone_files
    from ada3d_edge.flops import selection_macs
    from ada3d_edge.models import SelectionNet, all_masks, build_backbone

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    backbone = build_backbone(arch, num_classes=400, crop_size=CROP, num_frames=T).eval()
    k = backbone.num_stages_3d
    if calibrated:
        with torch.no_grad():
            for bn in backbone.config_bns:
                bn.config_mean.normal_(0, 0.1)
                bn.config_var.uniform_(0.5, 2.0)
            backbone.bn_calibrated.fill_(True)
    sel = SelectionNet(T, k).eval()
    with torch.no_grad():  # stand-in policy: decisions depend on the input instead of the init bias
        for head in (sel.frame_head, sel.stage_head):
            head.weight.normal_(0.0, 4.0 / sel.num_features ** 0.5)
            head.bias.zero_()
    export_policy(sel, out / "policy.onnx", T, POLICY)
    t0 = time.time()
    from ada3d_edge.export.fold_choice import resolve_folds

    folds, layout_choice = resolve_folds(backbone, CROP, 17, T, fold)
    graph, segments = build_shared_backbone(backbone, CROP, 17, folds, num_frames=T)
    info = save_backbone_files(graph, segments, out, configs=config_graphs(segments, k, 400, CROP))
    export_s = time.time() - t0
    del graph, segments
    pol = selection_macs(sel.spec, frames=T, size=POLICY, num_stages=k, num_frames_out=T) / T / 1e9
    write_manifest(out, Manifest(
        arch=arch, stages=list(backbone.stage_names), num_frames=T, stride=8, crop_size=CROP, policy_size=POLICY,
        mean=[0.45] * 3, std=[0.225] * 3, classes=[f"class_{i}" for i in range(400)],
        policy=PolicyEntry.for_file(out, "policy.onnx", pol),
        backbone=backbone_entry(out, info, all_masks(k), backbone.spec, CROP),
        versions={"note": "random init, benchmarks/bundle_memory.py"}, layout_choice=layout_choice,
        created="benchmark"))
    t0 = time.time()
    upper = export_backbone(backbone, "1" * k, out.parent / f"{arch}_upper_format1.onnx", CROP, num_frames=T)
    upper_s = time.time() - t0
    mib = 2 ** 20
    seg_files = [f for s in info["segments"] for f in s["files"]]
    return {"export_shared_s": export_s, "export_upper_file_s": upper_s,
            "graph_mib": (out / info["graph"]).stat().st_size / mib,
            "weights_mib": (out / info["weights"]).stat().st_size / mib,
            "segment_files": len(seg_files), "segments_mib": sum((out / f).stat().st_size for f in seg_files) / mib,
            "upper_file_mib": upper.stat().st_size / mib, "upper_file": str(upper), "per_config_bn": info["per_config_bn"]}


def upper_file_probe(path: str, threads: int) -> dict:
    """Fresh process: today's Upper ONNX file alone, ORT defaults (ORT_ENABLE_ALL, memory pattern on)."""
    import numpy as np

    from ada3d_edge.runtime.backends.ort import OrtBackend
    from ada3d_edge.runtime.bench import process_memory_mb

    before = process_memory_mb()
    be = OrtBackend(intra_op_threads=threads)
    be.load("upper", Path(path))
    for t in range(T, 0, -1):
        be.run("upper", {"clip": np.zeros((1, 3, t, CROP, CROP), np.float32)})
    after = process_memory_mb()
    be.close()
    return {"which": "upper_file", "source": after.get("source"), "pss_mb": after.get("pss"),
            "uss_mb": after.get("uss"), "rss_mb": after.get("rss"), "baseline_pss_mb": before.get("pss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="slow_r50", choices=["slow_r50", "i3d_r50"])
    ap.add_argument("--calibrated", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="runs/bundle_memory")
    args = ap.parse_args()

    from ada3d_edge.runtime.bench import backend_factory, measure_memory
    from ada3d_edge.runtime.bench_report import machine_info
    from ada3d_edge.runtime.backends.ort import OrtBackend

    tag = f"{args.arch}{'_calibrated' if args.calibrated else ''}"
    out = Path(args.workdir) / tag / "bundle"
    disk = export_full_bundle(args.arch, out, args.calibrated)
    print(json.dumps(disk), flush=True)
    memory = measure_memory(str(out), backend_factory("ort", None, args.threads))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        memory["upper_file"] = pool.apply(upper_file_probe, (disk["upper_file"], args.threads))
    with OrtBackend(intra_op_threads=args.threads) as be:
        info = machine_info(be, args.threads)
    res = {"command": command_line(), "arch": args.arch, "calibrated": args.calibrated, "disk": disk,
           "memory": memory, "machine": info}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"bundle_memory_{tag}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    write_md(res, RESULTS / f"bundle_memory_{tag}.md")
    print((RESULTS / f"bundle_memory_{tag}.md").read_text())


def write_md(res: dict, path: Path) -> None:
    from _common import machine_lines

    m, d = res["memory"], res["disk"]
    base = m["upper_file"]["pss_mb"]

    def row(label: str, p: dict) -> str:
        if "error" in p:
            return f"| {label} | error: {p['error']} | | | |"
        return (f"| {label} | {p['pss_mb']:.0f} | {p['uss_mb']:.0f} | {p['rss_mb']:.0f} | "
                f"{p['pss_mb'] / base:.2f} |")

    k = "all 4" if res["arch"] == "slow_r50" else "all 32"
    lines = [f"# Bundle format 2 memory on ONNX Runtime CPU: {res['arch']}"
             f"{' with per-configuration BN tables' if res['calibrated'] else ''}, 224x224, T = 8", "",
             f"Command: `{res['command']}`", "", *machine_lines(res["machine"]),
             "- the CPU is shared with other agents (load average above); memory is per fresh spawned process, "
             "read from /proc/self/smaps_rollup after running its models at batch 1 at every T' 8..1", "",
             "| process | PSS MiB | USS MiB | RSS MiB | PSS / today's Upper file |", "|---|---|---|---|---|",
             row(f"{k} configurations + selection net, one backbone session (`ada3d bench` all)", m["all"]),
             row("one backbone session, Upper only run (`ada3d bench` upper)", m["upper"]),
             row("today's per-configuration Upper file alone, ORT defaults (issue 13's baseline)", m["upper_file"]),
             "",
             f"Disk: graph {d['graph_mib']:.1f} MiB + weights {d['weights_mib']:.1f} MiB + {d['segment_files']} "
             f"segment files {d['segments_mib']:.2f} MiB = "
             f"**{(d['graph_mib'] + d['weights_mib'] + d['segments_mib']) / d['upper_file_mib']:.2f}x** one Upper "
             f"ONNX file ({d['upper_file_mib']:.1f} MiB). Export of the shared backbone {d['export_shared_s']:.0f} s "
             f"(one Upper file: {d['export_upper_file_s']:.0f} s; wall clock under load)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
