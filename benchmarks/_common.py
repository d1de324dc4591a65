"""Shared bits of the benchmark scripts: machine description and the exact command line."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def command_line() -> str:
    """The command that ran this script, with the environment variables that matter."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ)
    args = " ".join(shlex.quote(a) for a in sys.argv)
    return f"{env + ' ' if env else ''}.venv/bin/python {args}"


def machine_lines(info: dict) -> list[str]:
    """Markdown bullet lines describing the machine (from `bench_report.machine_info`)."""
    load = info.get("loadavg_at_start") or info.get("loadavg")
    return [f"- machine: {info['cpu']}, {info['cores']} cores ({info.get('cores_usable')} usable), {info['os']}",
            f"- python {info['python']}, numpy {info['numpy']}, onnxruntime {info.get('onnxruntime')}, "
            f"threads {info['threads']}, OMP_NUM_THREADS={info.get('omp_num_threads')}",
            f"- load average at start (1/5/15 min): {', '.join(f'{x:.2f}' for x in load) if load else 'n/a'}; "
            f"date {info['date']}"]


def time_layouts(sessions: dict, layouts: list, masks: list, frames: list, crop: int, rounds: int,
                 log=None) -> dict:
    """Median thread CPU ms of every ``(layout, mask, T')``, keyed ``"layout|mask|T'"``.

    ``sessions``: a one-graph layout's name -> its session (fed ``stage_mask``), and
    ``("format 1", mask)`` -> that configuration's own graph. Every round runs every job once in a
    shuffled order; the first round is a warm-up. ``log`` gets a line per round.
    """
    import random
    import statistics
    import time

    import numpy as np

    from ada3d_edge.export.shared_graph import mask_array

    rng = np.random.default_rng(0)
    xs = {f: rng.standard_normal((1, 3, f, crop, crop)).astype(np.float32) for f in frames}
    jobs = [(lay, m, f) for lay in layouts for m in masks for f in frames]
    samples = {j: [] for j in jobs}
    order = random.Random(0)
    for r in range(rounds + 1):
        order.shuffle(jobs)
        for lay, m, f in jobs:
            if lay == "format 1":
                sess, feeds = sessions[(lay, m)], {"clip": xs[f]}
            else:
                sess, feeds = sessions[lay], {"clip": xs[f], "stage_mask": mask_array(m)}
            c0 = time.thread_time()
            sess.run(None, feeds)
            if r:
                samples[(lay, m, f)].append((time.thread_time() - c0) * 1e3)
        if log:
            log(f"round {r + 1}/{rounds + 1}")
    return {f"{lay}|{m}|{f}": statistics.median(v) for (lay, m, f), v in samples.items()}
