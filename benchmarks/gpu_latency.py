"""PyTorch CUDA latency per configuration: eager, and CUDA graphs (one captured graph per stage mask
and T'), round-robin in one process, ratios to Upper. Skipped, with the reason, where CUDA is absent.

    .venv/bin/python benchmarks/gpu_latency.py --arch slow_r50 --frames 8,4,1 --repeats 20 --warmup 5
Results: benchmarks/results/gpu_latency_<arch>.{json,md} (or a skip note, exit code 0).
"""
from __future__ import annotations

import argparse

from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.bench import Job
from ada3d_edge.runtime.stats import latency_stats
from ada3d_edge.runtime.bench_report import machine_info, write_json


def cuda_skip_reason() -> str | None:
    """None when a CUDA device is usable, else why not."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__} (CPU-only build or no GPU)"
    return None


def _runners(backbone, masks, frames, batch, graphs: bool):
    """{Job: zero-arg callable} running each configuration on a static input; captured graphs if asked."""
    import torch

    from ada3d_edge.models.fixed_mask import FixedMaskBackbone

    runners = {}
    for mask in masks:
        mod = FixedMaskBackbone(backbone, mask).eval()
        for t in frames:
            x = torch.randn(batch, 3, t, backbone.spec.crop_size, backbone.spec.crop_size, device="cuda")
            if not graphs:
                runners[Job.backbone(mask, t, batch)] = (lambda m=mod, x=x: m(x))
                continue
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up on a side stream before capture (PyTorch's recipe)
                    mod(x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                mod(x)
            runners[Job.backbone(mask, t, batch)] = graph.replay
    return runners


def time_cuda(runners, repeats: int, warmup: int, seed: int = 0):
    """Round-robin, shuffled; each call timed with CUDA events (GPU time of that call)."""
    import numpy as np
    import torch

    jobs = list(runners)
    samples = {j: [] for j in jobs}
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        for r in range(warmup + repeats):
            for j in [jobs[i] for i in rng.permutation(len(jobs))]:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                runners[j]()
                end.record()
                end.synchronize()
                if r >= warmup:
                    samples[j].append(start.elapsed_time(end))
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="slow_r50")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--frames", default="8,4,1")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--masks", default=None, help="Comma-separated subset (default: all 2^K).")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fp16", action="store_true", help="Autocast-free half weights and inputs.")
    args = ap.parse_args()
    out = RESULTS / f"gpu_latency_{args.arch}"
    reason = cuda_skip_reason()
    if reason:
        msg = f"SKIPPED gpu_latency ({args.arch}): {reason}. Command: `{command_line()}`"
        print(msg)
        return
    import torch

    from ada3d_edge.flops import gflops
    from ada3d_edge.models import all_masks, build_backbone, set_fold_frames

    frames = [int(f) for f in args.frames.split(",")]
    torch.manual_seed(0)
    backbone = build_backbone(args.arch, num_classes=400, crop_size=args.crop, num_frames=max(frames)).cuda().eval()
    set_fold_frames(backbone, True)
    masks = args.masks.split(",") if args.masks else all_masks(backbone.num_stages_3d)
    upper = Job.backbone("1" * backbone.num_stages_3d, max(frames), args.batch)
    if upper.mask not in masks:
        masks.append(upper.mask)
    result = {"command": command_line(), "machine": machine_info(None, None), "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "cuda": torch.version.cuda, "arch": args.arch, "crop": args.crop}
    with torch.inference_mode():
        for mode in ("eager", "cuda_graphs"):
            samples = time_cuda(_runners(backbone, masks, frames, args.batch, mode == "cuda_graphs"),
                                args.repeats, args.warmup)
            up = latency_stats(samples[upper])
            up_g = gflops(args.arch, upper.mask, upper.frames, args.crop)
            result[mode] = [{"mask": j.mask, "frames": j.frames, "batch": j.batch,
                             "gflops_ratio": gflops(args.arch, j.mask, j.frames, args.crop) / up_g,
                             "latency_ms": latency_stats(s).to_json(), "latency_ratio": latency_stats(s).p50 / up.p50}
                            for j, s in samples.items()]
    result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    write_json(result, out.with_suffix(".json"))
    lines = [f"# PyTorch CUDA latency, {args.arch} @{args.crop}, batch {args.batch} ({result['gpu']})", "",
             f"Command: `{result['command']}`", "", *machine_lines(result["machine"]),
             f"- torch {result['torch']}, CUDA {result['cuda']}; CUDA-event timing per call, round-robin", "",
             "| mode | mask | T' | GFLOPs ratio | p50 ms | p95 ms | latency ratio |", "|---|---|---|---|---|---|---|"]
    for mode in ("eager", "cuda_graphs"):
        for row in sorted(result[mode], key=lambda r: (r["mask"], -r["frames"])):
            s = row["latency_ms"]
            lines.append(f"| {mode} | {row['mask']} | {row['frames']} | {row['gflops_ratio']:.3f} | {s['p50']:.2f} | "
                         f"{s['p95']:.2f} | {row['latency_ratio']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
