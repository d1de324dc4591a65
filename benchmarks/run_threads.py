"""ONNX Runtime thread settings for `ada3d run` on this CPU: Upper latency per (threads, spinning),
idle and under load, to choose the runtime's defaults.

The model is the demo's size: a random-init `slow_tiny` Upper (all stages 3D) at 64 px, T = 8,
exported with the exporter's plain function. Each setting is timed in its own fresh process (an
ONNX Runtime thread pool that spins would steal CPU from the next setting in the same process),
visiting the settings round-robin in a shuffled order each round; "under load" adds one busy-loop
process per core beside it (stream decoding, sinks, any other program on the device). Ratios are to
1 thread without spinning in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run_threads.py --rounds 5 --calls 100
Results: benchmarks/results/run_threads.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines

SETTINGS = [(None, None), (1, True), (1, False), (2, True), (2, False)]  # (threads, allow_spinning)
CROP, T = 64, 8


def label(threads: int | None, spin: bool | None) -> str:
    return f"threads {threads or 'default'}, spinning {'default' if spin is None else ('on' if spin else 'off')}"


def export_upper(path: Path) -> Path:
    """Random-init slow_tiny Upper at the demo's size as ONNX."""
    import torch

    from ada3d_edge.export.onnx_export import export_backbone
    from ada3d_edge.models import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("slow_tiny", num_classes=8, crop_size=CROP, num_frames=T).eval()
    export_backbone(backbone, "11", path, CROP, num_frames=T)
    return path


def child(model: str, threads: int, spin: int, calls: int) -> None:
    """Time ``calls`` Upper runs (after 10 warm-up calls) with one setting; print JSON."""
    import numpy as np

    from ada3d_edge.runtime.backends.ort import OrtBackend

    backend = OrtBackend(intra_op_threads=threads or None, allow_spinning=None if spin < 0 else bool(spin))
    backend.load("upper", model)
    x = {"clip": np.random.default_rng(0).standard_normal((1, 3, T, CROP, CROP), dtype=np.float32)}
    for _ in range(10):
        backend.run("upper", x)
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        backend.run("upper", x)
        ms.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}))


def measure(model: Path, rounds: int, calls: int, load: bool) -> dict[str, dict[str, float]]:
    """Median over rounds of each setting's p50 and p95 (ms)."""
    import numpy as np

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
            ] if load else []
    samples: dict[str, list[tuple[float, float]]] = {label(*s): [] for s in SETTINGS}
    try:
        for r in range(rounds):
            for threads, spin in random.Random(r).sample(SETTINGS, len(SETTINGS)):
                cmd = [sys.executable, __file__, "--child", str(model), str(threads or 0),
                       str(-1 if spin is None else int(spin)), str(calls)]
                out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                samples[label(threads, spin)].append((out["p50"], out["p95"]))
            print(f"{'under load' if load else 'idle'}: round {r + 1}/{rounds}", flush=True)
    finally:
        for proc in busy:  # ours, by PID
            proc.kill()
            proc.wait()
    return {k: {"p50": float(np.median([a for a, _ in v])), "p95": float(np.median([b for _, b in v]))}
            for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, threads, spin, calls = args.child
        child(model, int(threads), int(spin), int(calls))
        return
    from ada3d_edge.runtime.bench_report import machine_info

    info = machine_info(None, None)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model = export_upper(Path(tmp) / "upper.onnx")
        results = {"idle": measure(model, args.rounds, args.calls, load=False),
                   f"under load ({os.cpu_count()} busy processes, one per core)": measure(model, args.rounds, args.calls, load=True)}
    ref = label(1, False)
    lines = ["# ONNX Runtime threads and spinning for `ada3d run` (Upper, demo size, CPU)", "",
             f"`{command_line()}` ({time.time() - t0:.0f} s)", "", *machine_lines(info),
             "- the 2 cores are shared with other agents working on this machine while it ran: absolute "
             "numbers are noisy, compare the ratios within one run", "",
             f"Random-init `slow_tiny` Upper, {CROP}x{CROP}, T={T}, batch 1; each setting in a fresh process, "
             f"round-robin, {args.rounds} rounds x {args.calls} calls, median over rounds. "
             f"Ratio = p50 / p50 of `{ref}` in the same condition.", ""]
    for cond, rows in results.items():
        lines += [f"## {cond}", "", "| setting | p50 ms | p95 ms | p50 ratio |", "|---|---|---|---|"]
        for k, v in rows.items():
            lines.append(f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} | {v['p50'] / rows[ref]['p50']:.2f} |")
        lines.append("")
    out = {"command": command_line(), "machine": info, "rounds": args.rounds, "calls": args.calls,
           "reference": ref, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run_threads.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "run_threads.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
