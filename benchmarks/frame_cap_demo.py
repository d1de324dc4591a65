"""Frame cap A/B on the demo bundle: Upper, adaptive, adaptive with ``--cap R`` on GFLOPs and (given
``--cap-lut``, a table from ``ada3d bench BUNDLE --lut``) on measured latency, round-robin per clip.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/frame_cap_demo.py BUNDLE --data LIST --root R [--cap 1.0] [--cap-lut LUT]

The three run on ONE ONNX Runtime backend (the same sessions), clip by clip in a rotating order, so
the machine's drift hits them alike; every pass times each clip once per variant after a warm-up.
End-to-end wall time of ``predict`` (preprocessing, selection network, backbone). Accuracy is on
the first pass (it does not change between passes). Writes benchmarks/results/frame_cap_demo.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.backends import make_backend
from ada3d_edge.runtime.bench_report import machine_info
from ada3d_edge.runtime.clips import list_clips
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.runtime.stats import latency_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--cap", type=float, default=1.0)
    ap.add_argument("--cap-lut", default=None)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="frame_cap_demo")
    args = ap.parse_args()

    be = make_backend("ort", intra_op_threads=args.threads, allow_spinning=False)
    plain = AdaptivePredictor(args.bundle, backend=be)
    capped = {"GFLOPs": AdaptivePredictor(plain.bundle, backend=be, warmup=False, cap=args.cap)}
    if args.cap_lut:
        capped["latency"] = AdaptivePredictor(plain.bundle, backend=be, warmup=False, cap=args.cap,
                                              cap_lut=args.cap_lut)
    clips = list(list_clips(plain.bundle, args.data, args.root, args.clips, print))
    t, upper_mask = plain.manifest.num_frames, plain.bundle.upper_mask
    keep_all = np.ones(t, dtype=bool)
    variants = {"Upper": lambda f: plain.run_fixed(f, keep_all, upper_mask),
                "adaptive": plain.predict,
                **{f"adaptive, cap {args.cap:g} ({basis})": c.predict for basis, c in capped.items()}}
    names = list(variants)
    for frames, _ in clips[:5]:  # warm-up
        for run in variants.values():
            run(frames)
    lat = {n: [] for n in names}
    hits, gflops, chosen = Counter(), Counter(), {n: Counter() for n in names}
    for p in range(args.passes):
        for i, (frames, labels) in enumerate(clips):
            k = (i + p) % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                pred = variants[name](frames)
                lat[name].append((time.perf_counter() - t0) * 1e3)
                if p == 0:
                    hits[name] += int(np.argmax(pred.scores)) in labels
                    gflops[name] += pred.gflops
                    chosen[name][f"{pred.stage_mask}/{pred.num_frames_kept}"] += 1
    n = len(clips)
    rows = {}
    for name in names:
        s = latency_stats(lat[name])
        rows[name] = {"mean_ms": s.mean, "p50_ms": s.p50, "p95_ms": s.p95, "accuracy": hits[name] / n,
                      "gflops": gflops[name] / n, "chosen": dict(chosen[name].most_common())}
    up = rows["Upper"]
    for r in rows.values():
        r.update({k.replace("_ms", "_ratio"): r[k] / up[k] for k in ("mean_ms", "p50_ms", "p95_ms")})
    info = machine_info(be, args.threads)
    cmd = command_line()
    out = RESULTS / args.name
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "machine": info, "clips": n,
                                                    "passes": args.passes,
                                                    "max_frames": {b: c.max_frames for b, c in capped.items()},
                                                    "rows": rows}, indent=2) + "\n")
    lines = ["# Frame cap on the demo bundle: Upper, adaptive, adaptive with the cap (one run, round-robin)", "",
             f"Command: `{cmd}`", "", *machine_lines(info),
             f"- bundle `{args.bundle}` ({plain.backend.describe()}); {n} centre clips of `{args.data}`, "
             f"{args.passes} passes, rotating order per clip; end-to-end wall ms of `predict`",
             *[f"- cap {args.cap:g} on {b}: at most these frames per configuration: {c.max_frames}"
               for b, c in capped.items()],
             *([f"- latency table `{args.cap_lut}`"] if args.cap_lut else []), "",
             "| | mean ms | p50 ms | p95 ms | mean / Upper | p50 / Upper | p95 / Upper | top-1 | GFLOPs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['mean_ratio']:.3f} | "
                     f"{r['p50_ratio']:.3f} | {r['p95_ratio']:.3f} | {100 * r['accuracy']:.1f} | {r['gflops']:.4f} |")
    lines += ["", "Configurations chosen (mask/T': clips):", ""]
    lines += [f"- {name}: " + ", ".join(f"{k} {v}" for k, v in rows[name]["chosen"].items()) for name in names[1:]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for c in capped.values():
        c.close()
    plain.close()


if __name__ == "__main__":
    main()
