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
