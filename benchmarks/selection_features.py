"""What a checkpoint's selection network can tell apart from its input: the features a policy acts on.

For each checkpoint: the MobileNetV2 classifier's top-1 on one centre clip per validation video, how
often its prediction has the right kind (static or motion: `classes.json` from `ada3d synth`) and the
right motion group (static / each motion pair), and a linear probe for the kind (logistic
regression on the standardised clip features the policy heads see, fitted on training clips). The
probe is about the best a linear policy head can do at telling which clips need motion; the stage-1
policy cannot act on a distinction its features do not make.

    .venv/bin/python benchmarks/selection_features.py runs/demo/train/upper/final.pt \
        --train runs/demo/data/train.txt --data runs/demo/data/val.txt --md benchmarks/results/selection_features_demo.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ada3d_edge.data.dataset import VideoListDataset, collate_skip_bad  # noqa: E402
from ada3d_edge.train.checkpoint import load_model  # noqa: E402
from ada3d_edge.train.evaluate import class_kinds  # noqa: E402


def features(model, ds, limit: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(standardised clip features as the heads see them, classifier predictions, labels)."""
    step = max(1, len(ds) // limit) if limit else 1
    sel = model.selection
    feats, preds, labels = [], [], []
    with torch.no_grad():
        for b in DataLoader(Subset(ds, range(0, len(ds), step)), batch_size=32, collate_fn=collate_skip_bad):
            if b["policy"] is None:
                continue
            f = sel.frame_features(b["policy"][:, 0]).mean(1)
            feats.append(sel.standardise(f))
            preds.append(sel.classifier(f).argmax(1))
            labels.append(b["label"])
    return torch.cat(feats), torch.cat(preds), torch.cat(labels)


def linear_probe(x: torch.Tensor, y: torch.Tensor, steps: int = 500, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression (Adam, light L2), full batch."""
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x), y).backward()
        opt.step()
    return lin


def groups_of(classes: List[str], kinds: Dict[str, str]) -> List[int]:
    """0 for static classes; motion classes in consecutive pairs (synth's forward/reversed order)."""
    out, motion = [], 0
    for name in classes:
        if kinds.get(name) == "static":
            out.append(0)
        else:
            out.append(1 + motion // 2)
            motion += 1
    return out


def measure(path: str, train: Path, val: Path, limit: int) -> Dict[str, float]:
    model, ck = load_model(path)
    model.eval()
    d = ck["data"]
    classes = val.parent / "classes.txt"
    kinds = class_kinds(classes)
    if not kinds:
        raise SystemExit(f"{classes.with_name('classes.json')} is missing: kinds come from `ada3d synth` data")
    common = dict(num_frames=d["num_frames"], stride=d["stride"], policy_size=d["policy_size"],
                  mean=d["mean"], std=d["std"], split="test", test_crop_size=d["test_crop_size"], num_clips=1)
    tr = VideoListDataset(train, train.parent, classes, **common)
    va = VideoListDataset(val, val.parent, classes, **common)
    motion = torch.tensor([kinds.get(c) != "static" for c in va.classes]).long()
    group = torch.tensor(groups_of(va.classes, kinds))
    xt, _, lt = features(model, tr, limit)
    xv, pv, lv = features(model, va, 0)
    probe = linear_probe(xt, motion[lt])
    pct = lambda ok: float(ok.float().mean() * 100)  # noqa: E731
    return {"top1": pct(pv == lv), "kind": pct(motion[pv] == motion[lv]), "group": pct(group[pv] == group[lv]),
            "probe_train": pct(probe(xt).argmax(1) == motion[lt]),
            "probe_val": pct(probe(xv).argmax(1) == motion[lv]), "videos": len(lv), "train_clips": len(lt)}


def read_recipe_optimizer(path: str) -> str:
    """optim.selection_optimizer from the config.yaml beside the checkpoint (sgd when absent)."""
    import yaml
    cfg = Path(path).with_name("config.yaml")
    if not cfg.is_file():
        return "?"
    optim = (yaml.safe_load(cfg.read_text()) or {}).get("optim", {})
    return f"{optim.get('selection_optimizer', 'sgd')} lr {optim.get('selection_lr')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--train", required=True, help="training list (fits the probe)")
    ap.add_argument("--data", required=True, help="validation list (classes.txt and classes.json beside it)")
    ap.add_argument("--train-clips", type=int, default=800, help="training videos for the probe (evenly spaced)")
    ap.add_argument("--md", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cols = ["checkpoint", "selection optimiser", "top-1", "kind", "static/pair group", "kind probe (train)",
            "kind probe (val)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for path in args.checkpoints:
        r = measure(path, Path(args.train), Path(args.data), args.train_clips)
        opt = read_recipe_optimizer(path)
        lines.append(f"| `{path}` | {opt} | {r['top1']:.1f} | {r['kind']:.1f} | {r['group']:.1f} | "
                     f"{r['probe_train']:.1f} | {r['probe_val']:.1f} |")
    text = (f"Selection network on `{args.data}` (one centre clip per video; classifier accuracies in %), "
            f"kind probe fitted on {r['train_clips']} clips of `{args.train}`.\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.md:
        Path(args.md).write_text(f"# What the selection network tells apart\n\nCommand: `{' '.join(sys.argv)}`\n\n"
                                 + text)


if __name__ == "__main__":
    main()
