"""Why the selection network costs more in the pipeline than back to back (issue 14 item 2).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cache_probe.py --bundle runs/demo/bundle [--rounds 300]

Times one ``policy_features`` call (8 frames) and one ``policy_heads`` call of a split bundle right
after each of: the same call (warm), a backbone call (Upper, as the predictor runs it), reading or
writing 1-64 MB, a 2 ms sleep, and 2 ms of Python work. Every round runs every case once, in a
shuffled order; medians after 20 rounds. If reading or writing N MB costs as much as a backbone call,
the cause is the data cache, which no code change of the small network avoids.
Writes benchmarks/results/cache_probe_cpu.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import RESULTS, command_line, machine_lines

from ada3d_edge import preprocess
from ada3d_edge.bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_NAME, POLICY_FEATURES,
                               POLICY_FEATURES_NAME, POLICY_HEADS_NAME, POLICY_INPUT)
from ada3d_edge.runtime.bench_report import machine_info
from ada3d_edge.runtime.predictor import AdaptivePredictor, stage_mask_feed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="A bundle with a split selection network (ada3d export).")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--name", default="cache_probe_cpu")
    args = ap.parse_args()
    pred = AdaptivePredictor(args.bundle, intra_op_threads=1, split_policy=True)
    m, be = pred.manifest, pred.backend
    be.load(POLICY_HEADS_NAME, pred.bundle.root / m.policy_split.heads.file)  # timed even where numpy runs it
    rng = np.random.default_rng(0)
    crops = pred._crop(rng.integers(0, 256, (m.num_frames, m.crop_size, m.crop_size, 3), dtype=np.uint8))
    xp = preprocess.to_policy_frames(crops, m.policy_size, m.mean, m.std)
    xb = preprocess.to_clip_tensor(crops, m.mean, m.std)[None]
    heads_in = np.zeros((1, m.policy_split.num_features), np.float32)
    upper = stage_mask_feed(pred.bundle.upper_mask)
    big = {mb: np.ones(mb * 2 ** 18, np.float32) for mb in (1, 4, 16, 64)}

    def timed(name, feeds):
        t0 = time.perf_counter()
        be.run(name, feeds)
        return (time.perf_counter() - t0) * 1e3

    calls = {"features (8 frames)": (POLICY_FEATURES_NAME, {POLICY_INPUT: xp}),
             "heads engine": (POLICY_HEADS_NAME, {POLICY_FEATURES: heads_in})}
    before = {"the same call (warm)": None,
              "a backbone call (Upper, T=8)": lambda: be.run(BACKBONE_NAME, {BACKBONE_INPUT: xb, BACKBONE_MASK_INPUT: upper}),
              **{f"reading {mb} MB": (lambda a=a: float(a.sum())) for mb, a in big.items()},
              **{f"writing {mb} MB": (lambda a=a: a.fill(1.0)) for mb, a in big.items()},
              "sleeping 2 ms": lambda: time.sleep(0.002),
              "2 ms of Python": lambda: [sum(range(100)) for _ in range(400)]}
    samples = {(b, c): [] for b in before for c in calls}
    keys = list(samples)
    for r in range(20 + args.rounds):
        rng.shuffle(keys)
        for b, c in keys:
            name, feeds = calls[c]
            (lambda: be.run(name, feeds))() if before[b] is None else before[b]()
            ms = timed(name, feeds)
            if r >= 20:
                samples[(b, c)].append(ms)
    pred.close()
    med = {f"{b} | {c}": float(np.median(v)) for (b, c), v in samples.items()}
    res = {"command": command_line(), "machine": machine_info(threads=1), "bundle": args.bundle,
           "rounds": args.rounds, "median_ms": med}
    out = RESULTS / args.name
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# The selection network's calls after other work (ONNX Runtime CPU, 1 thread)", "",
             f"Command: `{res['command']}`", "", *machine_lines(res["machine"]),
             f"- bundle `{args.bundle}`; {args.rounds} shuffled rounds after 20, medians (ms)", "",
             "| call right after | " + " | ".join(calls) + " | " + " | ".join(f"{c} / warm" for c in calls) + " |",
             "|---|" + "---|" * (2 * len(calls))]
    warm = {c: med[f"the same call (warm) | {c}"] for c in calls}
    for b in before:
        vals = [med[f"{b} | {c}"] for c in calls]
        lines.append(f"| {b} | " + " | ".join(f"{v:.3f}" for v in vals) + " | "
                     + " | ".join(f"{v / warm[c]:.2f}" for v, c in zip(vals, calls)) + " |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
