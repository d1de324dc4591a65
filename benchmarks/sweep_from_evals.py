"""The gamma sweep (paper Fig. 3) from `ada3d eval` JSON files: one per gamma, each with Ada3D and
Random FT rows trained from the same Upper (what `ada3d sweep` writes as eval_gamma_<g>.json, or a
demo's eval_joint.json).

Writes `<out>/<stem>.{csv,json,png}` (the same files `ada3d sweep` writes) and `<out>/<stem>.md`.

    .venv/bin/python benchmarks/sweep_from_evals.py 2=runs/demo/train/sweep/eval_gamma_2.json \
        4=runs/demo/train/sweep/eval_gamma_4.json 8=runs/demo/train/eval_joint.json \
        --out benchmarks/results --stem sweep_demo
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ada3d_edge.train.sweep import point, write_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("evals", nargs="+", metavar="GAMMA=EVAL_JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stem", default="sweep")
    ap.add_argument("--made-by", default=None, help="the command(s) that wrote the eval files, for the record")
    args = ap.parse_args()
    points, rows, metric = [], [], "top1"
    for item in args.evals:
        gamma, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected GAMMA=EVAL_JSON")
        res = json.loads(Path(path).read_text())
        p = point(float(gamma), res)
        points.append(p)
        metric = res["metric"]
        kinds = res.get("by_kind", {})
        usage = {k: f"{v['mean_3d']:.2f} / {v['mean_frames']:.2f}" for k, v in kinds.items()}
        saving = 100 * res["gflops_saving_vs_upper"]
        rft = f"{p['random_ft_metric']:.1f}" if p["random_ft_metric"] is not None else "-"
        rows.append(f"| {p['gamma']:g} | {p['upper_metric']:.1f} | {p['ada3d_metric']:.1f} | "
                    f"{p['ada3d_gflops']:.4f} | {saving:.1f} | {p['ada3d_mean_3d']:.2f} | "
                    f"{p['ada3d_mean_frames']:.2f} | {p['random_metric']:.1f} | {rft} | "
                    f"{usage.get('static', '-')} | {usage.get('motion', '-')} | `{path}` |")
    points.sort(key=lambda q: q["gamma"])
    files = write_sweep(points, metric, Path(args.out), args.stem)
    name = "mAP" if metric == "mAP" else "Top-1"
    head = (f"| gamma | Upper {name} | Ada3D {name} | Ada3D GFLOPs | saving vs Upper (%) | # 3D | # Frame | "
            f"Random | Random FT | static # 3D / # Frame | motion # 3D / # Frame | from |")
    made_by = [f"Eval files made by: {args.made_by}", ""] if args.made_by else []
    argv = list(sys.argv)
    if args.made_by:  # the note is printed below, not inside the command
        argv[argv.index(args.made_by)] = "'...'"
    md = ["# Gamma sweep (paper Fig. 3)", "", f"Command: `{' '.join(argv)}`", "", *made_by,
          "Ada3D GFLOPs include the selection network; Random and Random FT run at Ada3D's mean usage. "
          f"Plot: `{Path(files['png']).name}`.", "", head, "|" + "---|" * 12, *rows, ""]
    Path(args.out, f"{args.stem}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
