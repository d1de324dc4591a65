"""Engine build profiles (``export/*.yaml``) and the TensorRT shape profiles they imply — no TensorRT.

A profile YAML::

    name: jetson-orin-nano-fp16
    precision: fp16          # fp32 | fp16 | int8
    workspace_mb: 1024       # builder workspace memory pool
    max_batch: 2             # largest batch an engine accepts
    opt_batch: 1             # batch TensorRT tunes for (default 1)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import yaml

from ..bundle import BACKBONE_INPUT, POLICY_INPUT, Manifest

PRECISIONS = ("fp32", "fp16", "int8")
Shape = Tuple[int, ...]


@dataclass(frozen=True)
class EngineProfile:
    """How to build the engines of a bundle for one target."""

    name: str = "default"
    precision: str = "fp32"
    workspace_mb: int = 1024
    max_batch: int = 1
    opt_batch: int = 1

    def validate(self, source: str = "profile") -> "EngineProfile":
        """Return self; ValueError naming the bad field and the valid values."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"{source}: precision {self.precision!r} unknown; valid: {list(PRECISIONS)}")
        for key in ("workspace_mb", "max_batch", "opt_batch"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}")
        if self.opt_batch > self.max_batch:
            raise ValueError(f"{source}: opt_batch {self.opt_batch} exceeds max_batch {self.max_batch}")
        return self

    @property
    def workspace_bytes(self) -> int:
        return self.workspace_mb * (1 << 20)

    def with_overrides(self, precision: Optional[str] = None, workspace_mb: Optional[int] = None,
                       max_batch: Optional[int] = None) -> "EngineProfile":
        """Command-line options win over the YAML; opt_batch is clipped to the new max_batch."""
        p = replace(self, **{k: v for k, v in (("precision", precision), ("workspace_mb", workspace_mb),
                                               ("max_batch", max_batch)) if v is not None})
        return replace(p, opt_batch=min(p.opt_batch, p.max_batch)).validate("command line")


def load_profile(path: Union[str, Path]) -> EngineProfile:
    """Parse a profile YAML; FileNotFoundError / ValueError with the file name and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine profile {path} not found; see export/*.yaml for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of profile fields, got {type(data).__name__}")
    known = set(EngineProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; valid: {sorted(known)}")
    data.setdefault("name", path.stem)
    return EngineProfile(**data).validate(str(path))


def shape_profiles(manifest: Manifest, max_batch: int,
                   opt_batch: int = 1) -> Dict[str, Dict[str, Tuple[Shape, Shape, Shape]]]:
    """TensorRT (min, opt, max) input shapes per model kind, from the manifest.

    Backbones: ``clip`` from (1, 3, 1, S, S) to (B, 3, T, S, S), tuned at (opt_batch, 3, T, S, S).
    Policy: ``frames`` at fixed T, batch 1..B. (Segment engines: ``segment_shape_profile``.)
    """
    t, s, p = manifest.num_frames, manifest.crop_size, manifest.policy_size
    return {
        "backbone": {BACKBONE_INPUT: ((1, 3, 1, s, s), (opt_batch, 3, t, s, s), (max_batch, 3, t, s, s))},
        "policy": {POLICY_INPUT: ((1, 3, t, p, p), (opt_batch, 3, t, p, p), (max_batch, 3, t, p, p))},
    }


Dim = Union[int, str, None]  # an ONNX input dimension: a size, or a symbolic / unknown one


def segment_shape_profile(name: str, dims: Sequence[Dim], num_frames: int, max_batch: int, opt_batch: int = 1,
                          source: str = "segment") -> Tuple[Shape, Shape, Shape]:
    """TensorRT (min, opt, max) shape of a segment engine's input from its ONNX dimensions.

    A segment's boundary tensor is ``(B, C, T', H, W)``: axis 0 (batch) spans 1..max_batch, axis 2
    (kept frames) 1..T (the exported archs never stride in time), tuned at (opt_batch, T); every
    other axis must be a fixed size. Anything else is a ValueError naming the file.
    """
    dims = list(dims)
    if len(dims) != 5:
        raise ValueError(f"{source}: input {name!r} has {len(dims)} dims {dims}; a segment takes (B, C, T', H, W)")
    fixed = [d for i, d in enumerate(dims) if i not in (0, 2)]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in fixed):
        raise ValueError(f"{source}: input {name!r} dims {dims}: only batch (axis 0) and frames (axis 2) may be "
                         "dynamic; re-export the bundle with `ada3d export`")
    c, h, w = fixed
    return (1, c, 1, h, w), (opt_batch, c, num_frames, h, w), (max_batch, c, num_frames, h, w)
