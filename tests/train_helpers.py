"""Helpers of the training tests (a helper module, not a test module): the tiny recipe and readers."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List

import yaml


def tiny_recipe(root: Path, out: Path, **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A recipe dict for the tiny fixture: slow_tiny, T=4, 32 px, 1 epoch per stage."""
    r = {"model": {"arch": "slow_tiny", "selection_width": 0.35, "policy_size": 32},
         "data": {"root": str(root), "train_list": "train.txt", "val_list": "val.txt",
                  "classes": "classes.txt", "num_frames": 4, "stride": 2, "crop": 32,
                  "short_side_range": [32, 36], "test_crop": 32, "num_clips": 2, "flip": False,
                  "workers": 0, "max_bad_fraction": 0.0},
         "optim": {"lr": 0.05, "epochs": 1, "batch_size": 8},
         "policy": {"lr": 0.01, "epochs": 1, "batch_size": 8, "gamma": 0.5},
         "joint": {"lr": 0.01, "epochs": 1, "batch_size": 8},
         "output_dir": str(out), "device": "cpu"}
    for k, v in sections.items():
        r[k] = {**r.get(k, {}), **v} if isinstance(v, dict) else v
    return r


def rows(path: Path) -> List[Dict[str, str]]:
    """The rows of a metrics.csv."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_recipe(recipe, folder: Path, name: str = "recipe.yaml") -> Path:
    """A Recipe (or recipe dict) as YAML in `folder`, for the command line."""
    path = folder / name
    path.write_text(yaml.safe_dump(recipe if isinstance(recipe, dict) else recipe.to_dict()))
    return path
