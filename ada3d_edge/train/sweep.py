"""Gamma sweep (the paper's Fig. 3): accuracy vs GFLOPs for Ada3D and Random FT.

For each gamma: stage 1 + stage 2 from the shared Upper checkpoint, then Random FT at the usage the
joint model measured on the validation set, then `evaluate` on the validation list. Writes
`<output_dir>/sweep/`: `gamma_<g>/{policy,joint,random_ft}/`, `eval_gamma_<g>.json`,
`sweep.csv`, `sweep.json` and `sweep.png`.
"""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .build import check_data_paths, resolve_data_paths
from .config import Recipe
from .dist import DistInfo, barrier, init_distributed
from .evaluate import evaluate, write_json
from .run_dir import check_stage_dir
from .trainer import train_stage

FIELDS = ["gamma", "ada3d_metric", "ada3d_gflops", "ada3d_mean_3d", "ada3d_mean_frames",
          "random_ft_metric", "random_ft_gflops", "random_metric", "random_gflops", "upper_metric",
          "upper_gflops"]


def _row(res: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next((r for r in res["rows"] if r["method"] == name), {})


def point(gamma: float, res: Dict[str, Any]) -> Dict[str, Any]:
    """One sweep point from an `evaluate` result."""
    ada, rft, rnd, up = (_row(res, n) for n in ("Ada3D", "Random FT", "Random", "Upper"))
    return {"gamma": gamma, "ada3d_metric": ada["metric"], "ada3d_gflops": ada["gflops"],
            "ada3d_mean_3d": ada["mean_3d"], "ada3d_mean_frames": ada["mean_frames"],
            "random_ft_metric": rft.get("metric"), "random_ft_gflops": rft.get("gflops"),
            "random_metric": rnd["metric"], "random_gflops": rnd["gflops"],
            "upper_metric": up["metric"], "upper_gflops": up["gflops"]}


def plot(points: List[Dict[str, Any]], metric: str, path: Path) -> Path:
    """Accuracy (or mAP) vs GFLOPs per clip: Ada3D and Random FT per gamma, Upper as a star."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(points, key=lambda p: p["ada3d_gflops"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([p["ada3d_gflops"] for p in pts], [p["ada3d_metric"] for p in pts], "o-", label="Ada3D")
    for p in pts:
        ax.annotate(f"γ={p['gamma']:g}", (p["ada3d_gflops"], p["ada3d_metric"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    rft = sorted((p for p in points if p["random_ft_metric"] is not None), key=lambda p: p["random_ft_gflops"])
    if rft:
        ax.plot([p["random_ft_gflops"] for p in rft], [p["random_ft_metric"] for p in rft], "s--",
                label="Random FT")
    ax.plot([pts[0]["upper_gflops"]], [pts[0]["upper_metric"]], "*", markersize=12, label="Upper")
    ax.set_xlabel("GFLOPs per clip")
    ax.set_ylabel("mAP (%)" if metric == "mAP" else "Top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_sweep(recipe: Recipe, gammas: Sequence[float], random_ft: bool = True, num_clips=None,
              progress: bool = True, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Train and evaluate every gamma; returns the points and the written paths.

    Every stage folder is checked before any work: one that holds an earlier run is refused unless
    `resume` (finished stages are reused, unfinished ones continue from last.pt) or `overwrite`.
    """
    resolve_data_paths(recipe)
    check_data_paths(recipe)
    base = Path(recipe.output_dir)
    out = base / "sweep"
    upper = recipe.init_from.policy or str(base / "upper" / "final.pt")
    stages = ["policy", "joint"] + (["random_ft"] if random_ft else [])
    plans = [(float(g), _gamma_recipe(recipe, float(g), out, upper)) for g in gammas]
    todo = ([(recipe, "upper")] if not Path(upper).is_file() else []) + [(r, s) for _, r in plans for s in stages]
    for r, stage in todo:
        check_stage_dir(r.stage_dir(stage), stage, resume, overwrite)
    info: DistInfo = init_distributed(recipe.device)
    if not Path(upper).is_file():
        _train(recipe, "upper", resume, overwrite, progress)
    points, metric = [], "top1"
    for g, r in plans:
        _train(r, "policy", resume, overwrite, progress)
        joint = _train(r, "joint", resume, overwrite, progress)
        rft = _train(r, "random_ft", resume, overwrite, progress) if random_ft else None
        if info.is_main:
            res = evaluate(joint, r.data.val_list, root=r.data.root, classes_file=r.data.classes,
                           num_clips=num_clips, random_ft=rft, upper=upper, device=r.device, seed=r.seed,
                           progress=progress)
            write_json(res, out / f"eval_gamma_{g:g}.json")
            points.append(point(g, res))
            metric = res["metric"]
        barrier(info)
    if info.is_main:
        return write_sweep(points, metric, out)
    return {"points": points, "metric": metric, **_paths(out, "sweep")}


def _gamma_recipe(recipe: Recipe, gamma: float, out: Path, upper: str) -> Recipe:
    r: Recipe = copy.deepcopy(recipe)
    r.policy.gamma = gamma
    r.output_dir = str(out / f"gamma_{gamma:g}")
    r.init_from.policy = upper
    r.init_from.random_ft = recipe.init_from.random_ft or upper
    r.init_from.joint = None
    r.random_policy.frames = r.random_policy.stages = None  # Random FT at the joint model's measured usage
    return r


def _train(r: Recipe, stage: str, resume: bool, overwrite: bool, progress: bool) -> Path:
    """One stage of the sweep; with `resume` a finished stage is reused and an unfinished one continues."""
    final, last = r.stage_dir(stage) / "final.pt", r.stage_dir(stage) / "last.pt"
    if resume and final.is_file():
        return final
    resume_this = resume and last.is_file()
    return train_stage(r, stage, resume=resume_this, overwrite=overwrite or (resume and not resume_this),
                       progress=progress)


def _paths(out: Path, stem: str) -> Dict[str, str]:
    return {ext: str(out / f"{stem}.{ext}") for ext in ("csv", "json", "png")}


def write_sweep(points: List[Dict[str, Any]], metric: str, out: Path, stem: str = "sweep") -> Dict[str, Any]:
    """`<stem>.csv`, `<stem>.json` and `<stem>.png` (the Fig. 3 plot) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    result = {"points": points, "metric": metric, **_paths(out, stem)}
    with open(result["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(points)
    Path(result["json"]).write_text(json.dumps({"metric": metric, "points": points}, indent=1))
    plot(points, metric, Path(result["png"]))
    return result
