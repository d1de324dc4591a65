"""`ada3d eval`: the paper's Table 1 for one checkpoint on a list file.

Rows: Upper (all frames, every stage 3D), Random (random policies whose mean # frames and # 3D stages
match Ada3D's on this data), Random FT (the same random policies on a Random FT checkpoint's
backbone, when given), Ada3D (greedy policies). As in the paper, Upper and Random run the stage-0
model when `upper` (its checkpoint) is given; otherwise they run the evaluated checkpoint's backbone
(which stage 2 has fine-tuned under adaptive policies). Video-level prediction = mean of the clip scores of
N uniformly spaced test clips. GFLOPs are per clip; the selection network's cost is included in
the Random, Random FT and Ada3D rows (as in the paper, where Random matches Ada3D's total), not in
Upper. Two passes over the data: the first (Upper, Ada3D) measures Ada3D's usage, the second runs
the random policies matched to it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import BadVideoTracker, VideoListDataset, collate_skip_bad
from ..data.lists import load_classes, require_file
from .checkpoint import load_model
from .dist import pick_device
from .inference import CostModel, UsageAccumulator, all_actions, test_batches
from .rewards import frame_prob_for, random_actions
from ..models.selection import Actions, greedy_actions

PathLike = Union[str, Path]


def _classes_file(data_list: Path, classes_file: Optional[PathLike]) -> Path:
    if classes_file is not None:
        return Path(require_file(classes_file, "classes file", "--classes"))
    guess = data_list.parent / "classes.txt"
    if not guess.is_file():
        raise FileNotFoundError(f"no classes file given and {guess} does not exist; pass --classes FILE")
    return guess


def class_kinds(classes_file: Path) -> Dict[str, str]:
    """{class: "static" | "motion"} from the classes.json beside a classes file; {} when absent or unreadable."""
    path = classes_file.with_name("classes.json")
    if not path.is_file():
        return {}
    from ..data.synth import load_class_kinds
    try:
        return load_class_kinds(path)
    except (ValueError, KeyError, TypeError):
        return {}


def _row(acc: UsageAccumulator, name: str, labels: np.ndarray, multi: bool, selection: float) -> Dict[str, Any]:
    """A Table-1 row; `selection` = the selection network's GFLOPs per clip counted in the row."""
    gb = acc.mean_backbone_gflops
    return {"method": name, "metric": acc.metric(labels, multi),
            "gflops": gb + selection, "gflops_backbone": gb, "gflops_selection": selection,
            "includes_selection": selection > 0, "mean_3d": acc.mean_3d, "mean_frames": acc.mean_frames}


def recipe_max_bad_fraction(ckpt: Dict[str, Any]) -> float:
    """The unreadable-video limit a checkpoint was trained under (its recipe's data.max_bad_fraction)."""
    from .config import DataCfg

    data = (ckpt.get("recipe") or {}).get("data") or {}
    return float(data.get("max_bad_fraction", DataCfg.max_bad_fraction))


def _check_same_model(main: Dict[str, Any], other: Dict[str, Any], ck_main, ck_other, path, option: str) -> None:
    keys = ("arch", "num_classes", "num_frames", "backbone_overrides")
    diff = [f"{k}: {other.get(k)!r} vs {main.get(k)!r}" for k in keys if main.get(k) != other.get(k)]
    if ck_main["data"]["classes"] != ck_other["data"]["classes"]:
        diff.append("classes")
    if diff:
        raise ValueError(f"{option} {path} holds another model or class list than the evaluated checkpoint "
                         f"({'; '.join(diff)}); pass a checkpoint trained from the same recipe")


@dataclass
class EvalSetup:
    """What every evaluation of a checkpoint on a list file shares: the model (on its device), its
    checkpoint, the test dataset and loader built from the checkpoint's preprocessing, the cost model."""

    checkpoint: PathLike
    model: Any
    ck: Dict[str, Any]
    data_list: Path
    root: Path
    cls_file: Path
    ds: VideoListDataset
    loader: DataLoader
    cost: CostModel
    device: torch.device
    multi: bool
    threshold: float
    max_bad: float
    num_clips: int

    def load_same_model(self, path: PathLike, option: str):
        """Another checkpoint of the same model and classes (e.g. Upper, Random FT), on the device."""
        other, other_ck = load_model(path)
        _check_same_model(self.model.config, other.config, self.ck, other_ck, path, option)
        return other.to(self.device)

    def check_bad_videos(self) -> None:
        BadVideoTracker(self.max_bad, self.ds, setting="--max-bad-fraction").check(
            num_bad=self.ds.num_bad, num_seen=len(self.ds))

    def header(self) -> Dict[str, Any]:
        """The result entries that describe the data, the model and the test protocol."""
        m, d = self.model, self.ck["data"]
        return {"data": str(self.data_list), "root": str(self.root), "num_videos_skipped": self.ds.num_bad,
                "max_bad_fraction": self.max_bad, "num_clips": self.num_clips,
                "metric": "mAP" if self.multi else "top1", "multi_label": self.multi, "arch": m.config["arch"],
                "stages": list(m.backbone.stage_names), "num_frames": self.cost.t, "num_stages": self.cost.k,
                "crop": d["test_crop_size"], "policy_size": d["policy_size"],
                "selection_width": m.config["selection_width"],
                "selection_depth": m.config.get("selection_depth"), "selection_groups": m.config.get("selection_groups"),
                "selection_last_channels": m.config.get("selection_last_channels"),
                "threshold": self.threshold,
                "selection_gflops_per_clip": self.cost.selection_gflops}


def open_eval(checkpoint: PathLike, data_list: PathLike, root: Optional[PathLike] = None,
              classes_file: Optional[PathLike] = None, num_clips: Optional[int] = None,
              threshold: Optional[float] = None, batch_size: int = 4, workers: int = 0, device: str = "auto",
              max_bad_fraction: Optional[float] = None, others: Sequence[Tuple[Optional[PathLike], str, str]] = ()
              ) -> EvalSetup:
    """Load `checkpoint` and build its test data; `others` = (path, what, option) of further
    checkpoints, checked to exist before anything loads."""
    data_list = Path(require_file(data_list, "list file", "--data"))
    root = Path(root) if root is not None else data_list.parent
    cls_file = _classes_file(data_list, classes_file)
    for path, what, opt in others:
        if path is not None:
            require_file(path, what, opt)
    dev = pick_device(device)
    model, ck = load_model(checkpoint)
    d = ck["data"]
    classes = load_classes(cls_file, "--classes")
    if classes != list(d["classes"]):
        raise ValueError(f"{cls_file} lists other classes than the checkpoint was trained on "
                         f"({len(classes)} vs {len(d['classes'])}); pass the training classes file with --classes")
    thr = float(d.get("threshold", 0.5) if threshold is None else threshold)
    max_bad = recipe_max_bad_fraction(ck) if max_bad_fraction is None else float(max_bad_fraction)
    n_clips = int(num_clips or d.get("num_clips", 10))
    ds = VideoListDataset(data_list, root, cls_file, split="test", num_frames=d["num_frames"],
                          stride=d["stride"], test_crop_size=d["test_crop_size"], num_clips=n_clips,
                          policy_size=d["policy_size"], mean=d["mean"], std=d["std"],
                          multi_label=d["multi_label"] or None)
    multi = bool(d["multi_label"] or ds.multi_label)
    model.to(dev)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad)
    return EvalSetup(checkpoint, model, ck, data_list, root, cls_file, ds, loader,
                     CostModel(model.config, d["test_crop_size"]), dev, multi, thr, max_bad, n_clips)


@torch.no_grad()
def evaluate(checkpoint: PathLike, data_list: PathLike, root: Optional[PathLike] = None,
             classes_file: Optional[PathLike] = None, num_clips: Optional[int] = None,
             random_ft: Optional[PathLike] = None, upper: Optional[PathLike] = None,
             threshold: Optional[float] = None,
             batch_size: int = 4, workers: int = 0, device: str = "auto", seed: int = 0,
             progress: bool = True, max_bad_fraction: Optional[float] = None) -> Dict[str, Any]:
    """Evaluate `checkpoint` (+ optional Random FT checkpoint) on a list file; returns the result dict
    (rows, per-class usage, static/motion means) that `format_table` prints and `--json` writes.

    Unreadable videos are skipped and counted; more than `max_bad_fraction` of the list (default: the
    checkpoint's recipe's `data.max_bad_fraction`, the rule its training ran under) is a RuntimeError.
    """
    t0 = time.time()
    es = open_eval(checkpoint, data_list, root, classes_file, num_clips, threshold, batch_size, workers, device,
                   max_bad_fraction, others=((random_ft, "Random FT checkpoint", "--random-ft"),
                                             (upper, "Upper checkpoint", "--upper")))
    model, ds, multi, thr, dev, cost, loader = es.model, es.ds, es.multi, es.threshold, es.device, es.cost, es.loader
    data_list, cls_file = es.data_list, es.cls_file
    rf_model = es.load_same_model(random_ft, "--random-ft") if random_ft else None
    up_model = es.load_same_model(upper, "--upper") if upper else model
    t, k = cost.t, cost.k

    up, ada, labels, indices = UsageAccumulator(), UsageAccumulator(), [], []
    for (clip, policy, lab, b, n), batch in tqdm(test_batches(loader, dev), total=len(loader),
                                                  desc="eval: Upper + Ada3D", disable=not progress):
        up.add(up_model.backbone(clip), all_actions(clip.shape[0], t, k, dev), multi, b, n, cost)
        m, s = model.selection(policy)
        acts = greedy_actions(m, s, thr)
        ada.add(model(clip, acts), acts, multi, b, n, cost)
        labels.append(lab.numpy())
        indices.append(batch["index"].numpy())
    es.check_bad_videos()
    if not labels:
        raise RuntimeError(f"no readable video in {data_list}; see the warnings above")
    labels_np, idx = np.concatenate(labels), np.concatenate(indices)
    sel = cost.selection_gflops
    ada_row = _row(ada, "Ada3D", labels_np, multi, sel)
    frame_prob = frame_prob_for(min(max(ada_row["mean_frames"], 1.0), t), t)
    stage_prob = ada_row["mean_3d"] / k if k else 0.0

    rand, rand_ft = UsageAccumulator(), UsageAccumulator()
    gen = torch.Generator().manual_seed(seed)
    for (clip, policy, lab, b, n), _ in tqdm(test_batches(loader, dev), total=len(loader),
                                             desc="eval: Random" + (" + Random FT" if rf_model else ""),
                                             disable=not progress):
        acts = random_actions(clip.shape[0], t, k, frame_prob, stage_prob, generator=gen, device=dev)
        rand.add(up_model(clip, acts), acts, multi, b, n, cost)
        if rf_model is not None:
            rand_ft.add(rf_model(clip, acts), acts, multi, b, n, cost)

    rows = [_row(up, "Upper", labels_np, multi, 0.0), _row(rand, "Random", labels_np, multi, sel)]
    if rf_model is not None:
        rows.append(_row(rand_ft, "Random FT", labels_np, multi, sel))
    rows.append(ada_row)
    per_class, by_kind = _per_class(ds, idx, ada, up, labels_np, multi, class_kinds(cls_file))
    return {
        "checkpoint": str(checkpoint), "random_ft_checkpoint": str(random_ft) if random_ft else None,
        "upper_checkpoint": str(upper) if upper else None, "num_videos": int(len(labels_np)),
        **es.header(), "rows": rows,
        "random_policy": {"frame_prob": frame_prob, "stage_prob": stage_prob, "seed": seed},
        "gflops_saving_vs_upper": 1.0 - ada_row["gflops"] / rows[0]["gflops"],
        "per_class": per_class, "by_kind": by_kind, "wall_s": round(time.time() - t0, 2),
    }


def _per_class(ds: VideoListDataset, idx: np.ndarray, ada: UsageAccumulator, upper: UsageAccumulator,
               labels: np.ndarray, multi: bool, kinds: Dict[str, str]):
    """Ada3D's mean # 3D stages and # frames per class (a multi-label video counts for each label)."""
    n = len(idx)
    clips_per_video = len(np.concatenate(ada.frames)) // max(n, 1)
    frames = np.concatenate(ada.frames).reshape(n, clips_per_video).mean(1)
    stages = np.concatenate(ada.stages).reshape(n, clips_per_video).mean(1)
    ada_hit = np.concatenate(ada.scores).argmax(1)
    up_hit = np.concatenate(upper.scores).argmax(1)
    rows = []
    for c, name in enumerate(ds.classes):
        members = np.array([c in ds.records[i].labels for i in idx], dtype=bool)
        if not members.any():
            continue
        row = {"class": name, "kind": kinds.get(name), "num_videos": int(members.sum()),
               "mean_3d": float(stages[members].mean()), "mean_frames": float(frames[members].mean())}
        if not multi:
            row["ada3d_top1"] = 100.0 * float((ada_hit[members] == labels[members]).mean())
            row["upper_top1"] = 100.0 * float((up_hit[members] == labels[members]).mean())
        rows.append(row)
    by_kind: Dict[str, Dict[str, float]] = {}
    for kind in sorted({r["kind"] for r in rows if r["kind"]}):
        members = np.array([any(kinds.get(ds.classes[c]) == kind for c in ds.records[i].labels)
                            for i in idx], dtype=bool)
        by_kind[kind] = {"num_videos": int(members.sum()), "mean_3d": float(stages[members].mean()),
                         "mean_frames": float(frames[members].mean())}
    return rows, by_kind


def format_table(res: Dict[str, Any]) -> str:
    """Table 1 (markdown) + per-class usage + static/motion means."""
    metric = "mAP" if res["metric"] == "mAP" else "Top-1"
    upper_src = res.get("upper_checkpoint") or "the evaluated checkpoint's backbone"
    lines = [f"{res['arch']} (K={res['num_stages']}: {', '.join(res['stages'])}), T={res['num_frames']}, "
             f"crop {res['crop']}, {res['num_videos']} videos x {res['num_clips']} clips, "
             f"{res.get('num_videos_skipped', 0)} unreadable videos skipped, threshold {res['threshold']}",
             f"Upper and Random run {upper_src}.",
             "", f"| Method | {metric} (%) | GFLOPs/clip | backbone | selection | # 3D | # Frame |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        star = "*" if r["includes_selection"] else ""
        lines.append(f"| {r['method']} | {r['metric']:.1f} | {r['gflops']:.4g}{star} | "
                     f"{r['gflops_backbone']:.4g} | {r['gflops_selection']:.4g} | "
                     f"{r['mean_3d']:.2f} | {r['mean_frames']:.2f} |")
    lines.append(f"\n\\* includes the selection network ({res['selection_gflops_per_clip']:.4g} GFLOPs/clip: "
                 f"MobileNetV2 x{res['selection_width']}"
                 + (f", {res['selection_depth']} block(s) per group" if res.get("selection_depth") else "")
                 + (f", first {res['selection_groups']} groups" if res.get("selection_groups") else "")
                 + (f", {res['selection_last_channels']} last channels" if res.get("selection_last_channels") else "")
                 + f" on {res['num_frames']} frames at "
                 f"{res['policy_size']}px). Random: frame p={res['random_policy']['frame_prob']:.3f}, "
                 f"stage p={res['random_policy']['stage_prob']:.3f}. {saving_text(res['gflops_saving_vs_upper'])}")
    if res["per_class"]:
        lines += ["", "| Class | kind | videos | Ada3D # 3D | Ada3D # Frame |", "|---|---|---|---|---|"]
        for r in res["per_class"]:
            lines.append(f"| {r['class']} | {r['kind'] or '-'} | {r['num_videos']} | {r['mean_3d']:.2f} | "
                         f"{r['mean_frames']:.2f} |")
    if res["by_kind"]:
        lines += ["", "| Kind | videos | Ada3D # 3D | Ada3D # Frame |", "|---|---|---|---|"]
        for kind, r in res["by_kind"].items():
            lines.append(f"| {kind} | {r['num_videos']} | {r['mean_3d']:.2f} | {r['mean_frames']:.2f} |")
    return "\n".join(lines)


def saving_text(saving: float) -> str:
    """"Ada3D saves 30.9% GFLOPs vs Upper." or, when it costs more, "Ada3D costs 11.8% more GFLOPs than Upper"."""
    if saving < 0:
        return f"Ada3D costs {-100 * saving:.1f}% more GFLOPs than Upper."
    return f"Ada3D saves {100 * saving:.1f}% GFLOPs vs Upper."


def write_json(res: Dict[str, Any], path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return path
