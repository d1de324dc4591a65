"""Accuracy of a checkpoint's backbone under every fixed configuration: what a policy could earn.

For each stage mask and each count of evenly spaced frames (1, 2, 4, ..., T), runs the backbone on one
centre clip per validation video and prints top-1 for static and motion classes (when the classes file
has a `classes.json` with kinds beside it, as `ada3d synth` writes), per class, and the mean Eq. 4
rewards (R_u, R_v) at `--gamma`. This is the table that tells whether an input-dependent policy can pay
off at all: if the cheapest configuration that keeps static clips right differs from the one motion
clips need, the selection network has something to learn.

    .venv/bin/python benchmarks/config_accuracy.py runs/demo/train/upper/final.pt \
        --data runs/demo/data/val.txt --gamma 2 --md benchmarks/results/config_accuracy_demo.md

`--calibrate-on TRAIN_LIST` first measures per-configuration BatchNorm statistics on training clips
(for checkpoints written before BN calibration existed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ada3d_edge.data.dataset import VideoListDataset, collate_skip_bad  # noqa: E402
from ada3d_edge.models import Actions, all_masks  # noqa: E402
from ada3d_edge.models.specs import str_to_mask  # noqa: E402
from ada3d_edge.train.bn_calibration import calibrate_bn  # noqa: E402
from ada3d_edge.train.checkpoint import load_model  # noqa: E402
from ada3d_edge.train.evaluate import class_kinds  # noqa: E402


def frame_counts(t: int):
    n, out = 1, []
    while n < t:
        out.append(n)
        n *= 2
    return out + [t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True, help="validation list file (classes.txt beside it)")
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--calibrate-on", default=None, help="training list: measure BN statistics first")
    ap.add_argument("--md", default=None, help="write the table as markdown here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    root, classes = data.parent, data.parent / "classes.txt"
    model, ck = load_model(args.checkpoint)
    d = ck["data"]
    t, k = d["num_frames"], model.backbone.num_stages_3d
    common = dict(num_frames=t, stride=d["stride"], policy_size=d["policy_size"], mean=d["mean"], std=d["std"])
    if args.calibrate_on:
        tr = VideoListDataset(args.calibrate_on, root, classes, split="train", crop_size=d["crop_size"],
                              short_side_range=(d["crop_size"], int(d["crop_size"] * 1.125)), flip=False, **common)
        calibrate_bn(model.backbone, (b["clip"] for b in DataLoader(tr, batch_size=16, collate_fn=collate_skip_bad)))
    ds = VideoListDataset(data, root, classes, split="test", test_crop_size=d["test_crop_size"], num_clips=1, **common)
    kinds = class_kinds(classes)
    clips, labels = [], []
    for b in DataLoader(ds, batch_size=16, collate_fn=collate_skip_bad):
        if b["clip"] is not None:
            clips.append(b["clip"][:, 0])
            labels.append(b["label"])
    clip, lab = torch.cat(clips), torch.cat(labels)
    static = torch.tensor([kinds.get(ds.classes[i]) == "static" for i in lab.tolist()])
    rows = []
    with torch.no_grad():
        for mask in all_masks(k):
            for n in frame_counts(t):
                keep = torch.zeros(len(clip), t, dtype=torch.bool)
                keep[:, np.unique(np.round(np.linspace(0, t - 1, n)).astype(int))] = True
                stages = torch.tensor(str_to_mask(mask), dtype=torch.bool).expand(len(clip), k)
                pred = torch.cat([model(clip[i:i + 32], Actions(keep[i:i + 32], stages[i:i + 32])).argmax(1)
                                  for i in range(0, len(clip), 32)])
                ok = (pred == lab).float()
                ou, ov = n / t, (mask.count("1") / k) ** 2

                def reward(cost, sel):
                    return float((ok[sel] * (1 - cost) - (1 - ok[sel]) * args.gamma).mean())
                row = {"mask": mask, "frames": n, "top1": float(ok.mean() * 100),
                       "static": float(ok[static].mean() * 100) if static.any() else None,
                       "motion": float(ok[~static].mean() * 100) if (~static).any() else None,
                       "per_class": [float(ok[lab == c].mean() * 100) for c in range(len(ds.classes))]}
                if static.any() and (~static).any():
                    row.update(R_u_static=reward(ou, static), R_u_motion=reward(ou, ~static),
                               R_v_static=reward(ov, static), R_v_motion=reward(ov, ~static))
                rows.append(row)
    head = (f"Checkpoint `{args.checkpoint}` on `{args.data}` ({len(clip)} videos, one centre clip each), "
            f"stages {list(model.backbone.stage_names)} (mask bit 1 = 3D), evenly spaced frames; "
            f"rewards (Eq. 4) at gamma {args.gamma}.\n")
    cols = ["mask", "# frames", "top-1", "static", "motion", "R_u static", "R_u motion", "R_v static",
            "R_v motion"] + ds.classes
    lines = [head, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        vals = [r["mask"], str(r["frames"]), f"{r['top1']:.1f}"]
        vals += [f"{r[x]:.1f}" if r.get(x) is not None else "" for x in ("static", "motion")]
        vals += [f"{r[x]:+.2f}" if x in r else "" for x in ("R_u_static", "R_u_motion", "R_v_static", "R_v_motion")]
        vals += [f"{v:.0f}" for v in r["per_class"]]
        lines.append("| " + " | ".join(vals) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(f"# Accuracy under fixed configurations\n\nCommand: `{' '.join(sys.argv)}`\n\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "gamma": args.gamma,
                                               "classes": ds.classes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
