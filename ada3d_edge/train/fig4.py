"""The paper's Fig. 4 as a picture (`ada3d eval --plot`): how much of the 3D model Ada3D uses per class.

Two panels share one class axis: Ada3D's mean # 3D stages (0..K) and mean # frames (1..T) per class,
bars coloured by the class's kind (static / motion, from ``classes.json``; grey when unknown), with the
kind means as dashed lines. Classes are sorted by usage, least first: the mean of the two usages
normalised by their maxima, ``(#3D / K + #frames / T) / 2`` (ties by name). The paper's claim reads
off the picture: static classes at the top (fewer stages and frames), motion classes at the bottom.

matplotlib is imported only when drawing (the ``train`` extra).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

KIND_COLOURS = {"static": "#3b75af", "motion": "#ef8636", None: "#9a9a9a"}


@dataclass(frozen=True)
class Fig4Data:
    """What the figure plots, in plotting order (least usage first)."""

    classes: Tuple[str, ...]
    kinds: Tuple[Optional[str], ...]
    mean_3d: Tuple[float, ...]
    mean_frames: Tuple[float, ...]
    usage: Tuple[float, ...]           # (#3D / K + #frames / T) / 2, ascending
    num_stages: int
    num_frames: int
    kind_means: Dict[str, Tuple[float, float]]   # kind -> (mean # 3D, mean # frames)
    title: str


def usage_of(mean_3d: float, mean_frames: float, num_stages: int, num_frames: int) -> float:
    """The sort key: the two usages normalised by their maxima, averaged (0 = nothing, 1 = Upper)."""
    stages = mean_3d / num_stages if num_stages else 0.0
    return (stages + mean_frames / num_frames) / 2.0


def fig4_data(res: Dict[str, Any]) -> Fig4Data:
    """The per-class usage of an `evaluate` result, sorted by usage; ValueError when it has none."""
    rows = res.get("per_class") or []
    if not rows:
        raise ValueError("the evaluation holds no per-class usage (no video of any class was read): "
                         "nothing to plot for --plot")
    k, t = int(res["num_stages"]), int(res["num_frames"])
    keyed = sorted(rows, key=lambda r: (usage_of(r["mean_3d"], r["mean_frames"], k, t), r["class"]))
    metric = "mAP" if res.get("metric") == "mAP" else "top-1"
    ada = next((r for r in res.get("rows", []) if r.get("method") == "Ada3D"), None)
    score = f", Ada3D {metric} {ada['metric']:.1f}%" if ada else ""
    title = (f"Ada3D usage per class: {res.get('arch', '?')}, T={t}, K={k}, "
             f"{res.get('num_videos', '?')} videos x {res.get('num_clips', '?')} clips{score}")
    return Fig4Data(
        classes=tuple(r["class"] for r in keyed), kinds=tuple(r.get("kind") for r in keyed),
        mean_3d=tuple(float(r["mean_3d"]) for r in keyed),
        mean_frames=tuple(float(r["mean_frames"]) for r in keyed),
        usage=tuple(usage_of(r["mean_3d"], r["mean_frames"], k, t) for r in keyed),
        num_stages=k, num_frames=t,
        kind_means={kind: (float(v["mean_3d"]), float(v["mean_frames"]))
                    for kind, v in (res.get("by_kind") or {}).items()},
        title=title)


def plot_fig4(res: Dict[str, Any], path: Union[str, Path]) -> Fig4Data:
    """Draw the figure of an `evaluate` result to ``path`` (PNG); returns what it plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    data = fig4_data(res)
    n = len(data.classes)
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(9.5, max(2.8, 0.3 * n + 1.6)))
    y = list(range(n))
    colours = [KIND_COLOURS.get(kind, KIND_COLOURS[None]) for kind in data.kinds]
    panels: List[Tuple[Any, Tuple[float, ...], int, str, int]] = [
        (axes[0], data.mean_3d, data.num_stages, "mean # 3D stages", 0),
        (axes[1], data.mean_frames, data.num_frames, "mean # frames", 1)]
    for ax, values, top, label, which in panels:
        ax.barh(y, values, color=colours, height=0.7, zorder=2)
        for kind, means in data.kind_means.items():
            ax.axvline(means[which], color=KIND_COLOURS.get(kind, KIND_COLOURS[None]), ls="--", lw=1.2, zorder=1)
        for yi, v in zip(y, values):  # the value inside the bar's end (beside it when the bar is short)
            inside = v > top * 0.15
            ax.text(v - top * 0.01 if inside else v + top * 0.01, yi, f"{v:.2f}", va="center",
                    ha="right" if inside else "left", color="white" if inside else "black", fontsize=8, zorder=3)
        ax.set_xlim(0, top * 1.12)
        ax.set_xlabel(f"{label} (max {top})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(data.classes, fontsize=9)
    axes[0].invert_yaxis()  # least usage at the top
    kinds_present = [k for k in ("static", "motion") if k in data.kinds]
    handles = [Patch(color=KIND_COLOURS[k], label=f"{k} (dashed: mean)") for k in kinds_present]
    if None in data.kinds:
        handles.append(Patch(color=KIND_COLOURS[None], label="kind unknown"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(data.title + "\nclasses sorted by usage (#3D / K + #frames / T) / 2, least first", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return data
