"""Full-size latency on ONNX Runtime CPU: randomly initialised slow_r50 (all 4 configurations) and
i3d_r50 (a few of its 32), 224x224, T = 8, round-robin in one process.

slow_r50 is exported as a real bundle (format 2: policy + one backbone graph for the 4 configurations
+ manifest, `bundle_memory.export_full_bundle`) and measured with `ada3d_edge.runtime.bench.run_bench`, the code behind `ada3d bench`. The weights
are random, so the selection net is a stand-in: its head weights are scaled so that its choices
vary with the (noise) input; what matters is the latency saving against the GFLOPs saving for the
choices it made. i3d_r50 is timed config by config (3 of 32 per-configuration files, format 1, the
"today" reference of docs/shared-weights.md) and its memory for all 32 such files is extrapolated from
the measured growth per loaded file (bundle_memory.py measures format 2 with all 32 loaded). The
slow_r50 bundle is exported with `--fold measure`, the exporter's default.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency_full_size.py --threads 2 --repeats 5 --warmup 2
Results: benchmarks/results/latency_ort_cpu_full.{json,md} (+ .png).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines

from ada3d_edge.bundle import engine_name
from ada3d_edge.runtime.bench import BenchOptions, Job, process_memory_mb, run_bench, time_round_robin
from ada3d_edge.runtime.stats import latency_stats
from ada3d_edge.runtime.bench_report import machine_info, plot, write_json

I3D_MASKS = ("11111", "00000", "01010")
CROP, T = 224, 8


def export_slow_bundle(out: Path) -> Path:
    """Random-init slow_r50 + MobileNetV2 selection net as a format-2 bundle at ``out`` (skipped if present)."""
    if (out / "manifest.json").is_file():
        return out
    from bundle_memory import export_full_bundle

    export_full_bundle("slow_r50", out, calibrated=False, fold="measure")  # as `ada3d export` does by default
    return out


def proc_status_mb() -> dict:
    """RSS of this process, in the keys this script's format-1 i3d probe reads."""
    return {"VmRSS": process_memory_mb()["rss"]}


def export_i3d(out: Path) -> dict[str, Path]:
    """A few i3d_r50 configurations as ONNX files (random init)."""
    import torch

    from ada3d_edge.export.onnx_export import export_backbone
    from ada3d_edge.models import build_backbone

    out.mkdir(parents=True, exist_ok=True)
    paths = {m: out / f"i3d_{m}.onnx" for m in I3D_MASKS}
    if all(p.is_file() for p in paths.values()):
        return paths
    torch.manual_seed(0)
    backbone = build_backbone("i3d_r50", num_classes=400, crop_size=CROP, num_frames=T).eval()
    for mask, path in paths.items():
        export_backbone(backbone, mask, path, CROP, num_frames=T)
        print(f"exported i3d_r50 {mask}", flush=True)
    return paths


def i3d_latency(paths: dict[str, Path], threads: int, repeats: int, warmup: int) -> dict:
    """Round-robin latency of the i3d configurations at T' = 8, 4, 1 (batch 1)."""
    import numpy as np

    from ada3d_edge.flops import gflops
    from ada3d_edge.runtime.backends.ort import OrtBackend

    be = OrtBackend(intra_op_threads=threads)
    for mask, path in paths.items():
        be.load(engine_name(mask), path)
    jobs = [Job(engine_name(m), f, 1, m) for m in I3D_MASKS for f in (8, 4, 1)]  # one file per configuration
    rng = np.random.default_rng(0)
    xs = {f: rng.standard_normal((1, 3, f, CROP, CROP), dtype=np.float32) for f in (8, 4, 1)}
    samples, errors = time_round_robin(be, jobs, lambda j: {"clip": xs[j.frames]}, repeats, warmup)
    up = latency_stats(samples[Job(engine_name("11111"), 8, 1, "11111")])
    up_g = gflops("i3d_r50", "11111", 8, CROP)
    rows = []
    for j in jobs:
        s = latency_stats(samples[j])
        g = gflops("i3d_r50", j.mask, j.frames, CROP)
        rows.append({"mask": j.mask, "frames": j.frames, "batch": 1, "gflops": g, "gflops_ratio": g / up_g,
                     "latency_ms": s and s.to_json(), "latency_ratio": s and s.p50 / up.p50,
                     "status": errors.get(j, "ok")})
    be.close()
    return {"configs": rows}


def i3d_memory_probe(paths: list[str], threads: int) -> list[dict]:
    """In this (fresh) process: RSS after loading + running each engine in turn (batch 1, T = 8)."""
    import numpy as np

    from ada3d_edge.runtime.backends.ort import OrtBackend

    be = OrtBackend(intra_op_threads=threads)
    x = np.zeros((1, 3, T, CROP, CROP), np.float32)
    out = [{"engines": 0, **proc_status_mb()}]
    for i, p in enumerate(paths):
        be.load(f"m{i}", p)
        be.run(f"m{i}", {"clip": x})
        out.append({"engines": i + 1, "file_mb": Path(p).stat().st_size / 2 ** 20, **proc_status_mb()})
    return out


def i3d_memory(paths: dict[str, Path], threads: int) -> dict:
    cmd = [sys.executable, __file__, "--i3d-memprobe", *map(str, paths.values()), "--threads", str(threads)]
    steps = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    first = steps[1]["VmRSS"] - steps[0]["VmRSS"]
    more = [(b["VmRSS"] - a["VmRSS"]) for a, b in zip(steps[1:], steps[2:])]
    per = sum(more) / len(more) if more else first
    return {"steps": steps, "first_engine_mb": first, "per_extra_engine_mb": per,
            "estimate_32_engines_mb": steps[0]["VmRSS"] + first + 31 * per,
            "upper_alone_mb": steps[0]["VmRSS"] + first, "onnx_file_mb": steps[1]["file_mb"]}


def _s(x, f=".1f"):
    return "-" if x is None else format(x, f)


def _config_table(configs: list, with_batch: bool) -> list:
    """Markdown rows, one per configuration: mask, T', [batch,] GFLOPs, latency, ratios, status."""
    cols = ["mask", "T'"] + (["batch"] if with_batch else []) + [
        "GFLOPs", "GFLOPs ratio", "p50 ms", "p95 ms", "latency ratio", "status"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in configs:
        st = c["latency_ms"] or {}
        vals = [c["mask"], str(c["frames"])] + ([str(c["batch"])] if with_batch else []) + [
            f"{c['gflops']:.2f}", f"{c['gflops_ratio']:.3f}", _s(st.get("p50")), _s(st.get("p95")),
            _s(c["latency_ratio"], ".3f"), c["status"]]
        lines.append("| " + " | ".join(vals) + " |")
    return lines


def write_md(res: dict, path: Path) -> None:
    s = res["slow_r50"]
    lines = ["# ONNX Runtime CPU latency, full-size models (random init), 224x224, T = 8", "",
             f"Command: `{res['command']}`", "", *machine_lines(s["machine"]),
             f"- round-robin in one process, shuffled each round: {s['settings']['warmup']} warm-up + "
             f"{s['settings']['repeats']} timed rounds; ratios are p50 / Upper's p50 at the same batch", "",
             "## slow_r50 (K = 2: res4, res5), all configurations", "",
             *_config_table(s["configs"], with_batch=True)]
    pol, ad, up, mem = s["policy"], s["adaptive"], s["upper"], s["memory_mb"] or {}
    lines += ["", f"Selection net (MobileNetV2 @112, 8 frames, batch 1): {_s((pol['latency_ms'] or {}).get('p50'))} ms "
                  f"p50 = **{_s(pol['fraction_of_upper'], '.3f')}** of Upper's engine p50 "
                  f"({_s(pol['fraction_of_upper_mean'], '.3f')} by means).", ""]
    if ad["status"] == "ok":
        lines += [f"End to end ({s['clips']}), preprocessing included, interleaved clip by clip:", "",
                  "| | GFLOPs | mean ms | p50 ms | p95 ms |", "|---|---|---|---|---|",
                  f"| Upper | {up['gflops']:.2f} | {up['latency_ms']['mean']:.1f} | {up['latency_ms']['p50']:.1f} | "
                  f"{up['latency_ms']['p95']:.1f} |",
                  f"| adaptive (stand-in policy) | {ad['gflops']:.2f} | {ad['latency_ms']['mean']:.1f} | "
                  f"{ad['latency_ms']['p50']:.1f} | {ad['latency_ms']['p95']:.1f} |", "",
                  f"Chosen (mask/T': clips): {ad['chosen']}. Saving: latency **{ad['latency_saving']:.1%}** vs "
                  f"GFLOPs {ad['gflops_saving']:.1%} (efficiency {_s(ad['saving_efficiency'], '.2f')}).", ""]
    lines += [f"Memory ({mem.get('unit', 'RSS')} MiB, fresh processes, batch 1): every configuration of the one "
              f"backbone graph + policy {_s(mem.get('all_engines'), '.0f')}, Upper alone "
              f"{_s(mem.get('upper_only'), '.0f')} (ratio {_s(mem.get('ratio'), '.2f')}).", ""]
    lines += ["Targets: " + "; ".join(f"{k} {_s(v['value'], '.3f')} ({v['target']}): "
                                      f"{'n/a' if v['met'] is None else ('met' if v['met'] else 'MISSED')}"
                                      for k, v in s["targets"].items()), ""]
    i3d = res.get("i3d_r50")
    if i3d:
        lines += ["## i3d_r50 (K = 5), 3 of 32 configurations, batch 1", "",
                  *_config_table(i3d["configs"], with_batch=False)]
        m = i3d["memory"]
        lines += ["", f"i3d_r50 memory: one ONNX engine file {m['onnx_file_mb']:.0f} MiB; RSS with Upper alone "
                      f"{m['upper_alone_mb']:.0f} MiB; each extra engine adds {m['per_extra_engine_mb']:.0f} MiB, so "
                      f"all 32 would take about **{m['estimate_32_engines_mb'] / 1024:.1f} GiB** (extrapolated from "
                      f"{len(m['steps']) - 1} loaded engines)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/ada3d_full", help="Where the ONNX files go (large).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2, help="Larger batch besides 1 (2 keeps the run short).")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--skip-i3d", action="store_true")
    ap.add_argument("--i3d-memprobe", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.i3d_memprobe:
        print(json.dumps(i3d_memory_probe(args.i3d_memprobe, args.threads)))
        return
    cmd, info0 = command_line(), machine_info(None, args.threads)
    work = Path(args.work)
    bundle = export_slow_bundle(work / "slow_r50_bundle_measure")
    t0 = time.time()
    options = BenchOptions(repeats=args.repeats, warmup=args.warmup, batch=args.batch, frames=[8, 4, 1],
                           clips=args.clips, memory=True)
    slow = run_bench(bundle, "ort", options, threads=args.threads, command=cmd, log=print).to_json()
    slow["machine"]["loadavg_at_start"] = info0["loadavg"]
    print(f"slow_r50 done in {time.time() - t0:.0f}s", flush=True)
    res = {"command": cmd, "slow_r50": slow}
    if not args.skip_i3d:
        paths = export_i3d(work / "i3d_r50")
        res["i3d_r50"] = {**i3d_latency(paths, args.threads, args.repeats, args.warmup),
                          "memory": i3d_memory(paths, args.threads), "machine": machine_info(None, args.threads)}
    res["machine_at_end"] = machine_info(None, args.threads)
    out = RESULTS / "latency_ort_cpu_full"
    write_json(res, out.with_suffix(".json"))
    write_md(res, out.with_suffix(".md"))
    plot(slow, out.with_suffix(".png"))
    print((out.with_suffix(".md")).read_text())


if __name__ == "__main__":
    main()
