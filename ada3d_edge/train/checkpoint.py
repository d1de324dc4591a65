"""Checkpoints: written atomically, read with `weights_only=True`, self-describing.

A checkpoint is a dict of plain types and tensors:
`{"format": "ada3d-checkpoint", "version": 1, "model_config": Ada3DConfig dict,
  "data": {num_frames, stride, crop_size, test_crop_size, policy_size, mean, std, classes,
           multi_label, threshold}, "stage": "upper" | "policy" | "joint" | "random_ft",
  "epoch": int, "step": int, "model": state_dict, "optimizer": state_dict | None,
  "scheduler": state_dict | None, "metrics": dict, "rng": dict | None,
  "recipe": dict (the resolved training recipe), "train_state": {baseline, epochs, world_size,
  random_policy, init}}`
`data` also holds `num_clips` (the recipe's test clips per video). `optimizer`, `scheduler` and `rng`
are None in `final.pt` (only `last.pt` resumes). `metrics` holds the last epoch's training means and
validation results (`val_metric`, `val_frames`, `val_stages3d`, `val_frames_frac`, ...).
Export and eval rebuild the model from `model_config` and never guess shapes or classes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ..models.ada3d import Ada3D, Ada3DConfig, build_ada3d, load_ada3d_state

FORMAT = "ada3d-checkpoint"
VERSION = 1


def save_checkpoint(path: Union[str, Path], payload: Dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint dict safely; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path} (corrupt, truncated, or holds pickled objects): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ada3d checkpoint (no format={FORMAT!r}); "
                         "to import pytorchvideo/PySlowFast/mmaction2 weights use load_pretrained / "
                         "`init_from` in a recipe")
    if int(ckpt.get("version", 0)) > VERSION:
        raise ValueError(f"{path} has checkpoint version {ckpt['version']}; this ada3d_edge reads <= {VERSION}")
    return ckpt


def load_model(path: Union[str, Path], strict: bool = True) -> Tuple[Ada3D, Dict[str, Any]]:
    """Rebuild the Ada3D model of a checkpoint and load its weights; returns (model in eval mode, checkpoint)."""
    ckpt = read_checkpoint(path)
    model = build_ada3d(Ada3DConfig(**ckpt["model_config"]))
    load_ada3d_state(model, ckpt["model"], strict=strict)
    return model.eval(), ckpt
