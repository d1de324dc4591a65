"""The demo model's latency table: `ada3d bench` on the demo bundle, results in benchmarks/results/.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency_demo.py BUNDLE [--data LIST --root R] [--threads 2] [--cap 1 --cap-lut LUT]
Writes latency_ort_cpu_demo.{json,md,png}: the `ada3d bench` console table, with the command and machine.
"""
from __future__ import annotations

import argparse

from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.bench import BenchOptions, run_bench
from ada3d_edge.runtime.bench_report import format_table, plot, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", default=None, help="List file (e.g. the synthetic val.txt); default: noise clips.")
    ap.add_argument("--root", default=None)
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cap", type=float, default=None, help="The predictor's frame cap (ada3d bench --cap).")
    ap.add_argument("--cap-lut", default=None, help="Its latency table (ada3d bench --cap-lut).")
    ap.add_argument("--name", default="latency_ort_cpu_demo")
    args = ap.parse_args()
    cmd = command_line()
    options = BenchOptions(data=args.data, root=args.root, clips=args.clips, repeats=args.repeats,
                           warmup=args.warmup, passes=args.passes, batch=args.batch, cap=args.cap,
                           cap_lut=args.cap_lut)
    r = run_bench(args.bundle, "ort", options, threads=args.threads, command=cmd, log=print).to_json()
    out = RESULTS / args.name
    write_json(r, out.with_suffix(".json"))
    plot(r, out.with_suffix(".png"))
    table = format_table(r)
    text = "\n".join(["# `ada3d bench` on the demo bundle", "", f"Command: `{cmd}`", "", *machine_lines(r["machine"]),
                      "", "```", table, "```", ""])
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
