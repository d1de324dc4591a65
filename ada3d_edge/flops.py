"""Analytic cost of Ada3D, pure Python: multiply-accumulates of conv and fc layers.

This is how the paper and PySlowFast count "GFLOPs". Costs are given per
(arch, stage mask, T' kept frames, crop), for the backbone and for the selection network apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

from .models.specs import (BackboneSpec, SelectionSpec, all_masks, get_spec, make_divisible,
                           mask_to_str, str_to_mask)

Mask = Union[str, Sequence[int], None]


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _conv(cin: int, cout: int, kt: int, kh: int, t: int, h: int, groups: int = 1) -> int:
    return cout * (cin // groups) * kt * kh * kh * t * h * h


def _resolve_mask(spec: BackboneSpec, mask: Mask) -> Dict[str, bool]:
    names = spec.degradable
    if mask is None:
        bits = (1,) * len(names)
    elif isinstance(mask, str):
        bits = str_to_mask(mask)
    else:
        bits = tuple(int(m) for m in mask)
    if len(bits) != len(names):
        raise ValueError(f"{spec.name} has {len(names)} degradable stages {names}; "
                         f"mask {mask!r} has {len(bits)}")
    return dict(zip(names, (bool(b) for b in bits)))


def backbone_macs(spec: BackboneSpec, mask: Mask = None, frames: Optional[int] = None,
                  crop: Optional[int] = None, breakdown: bool = False):
    """Multiply-accumulates of the backbone for T' = `frames` kept frames at `crop` x `crop`.

    A degraded stage keeps only the centre tap of each temporal kernel (kt -> 1).
    With `breakdown=True` returns a dict per part (stem, res2..res5, head) instead of the total.
    """
    is3d = _resolve_mask(spec, mask)
    t = spec.num_frames if frames is None else int(frames)
    h = spec.crop_size if crop is None else int(crop)
    if t < 1 or h < 1:
        raise ValueError(f"frames and crop must be >= 1, got frames={t}, crop={h}")
    parts: Dict[str, int] = {}
    kt = spec.stem_kernel_t if is3d.get("stem", True) else 1
    h = _out(h, spec.stem_kernel_s, 2, spec.stem_kernel_s // 2)
    parts["stem"] = _conv(3, spec.stem_width, kt, spec.stem_kernel_s, t, h)
    h = _out(h, 3, 2, 1)  # max-pool 1x3x3
    cin = spec.stem_width
    for i, stage in enumerate(spec.stages):
        macs = 0
        cout = stage.width * spec.expansion
        for b in range(stage.depth):
            stride = stage.spatial_stride if b == 0 else 1
            kt = stage.kernel(b) if is3d.get(stage.name, True) else 1
            h_out = _out(h, 3, stride, 1)
            macs += _conv(cin, stage.width, kt, 1, t, h)
            macs += _conv(stage.width, stage.width, 1, 3, t, h_out)
            macs += _conv(stage.width, cout, 1, 1, t, h_out)
            if b == 0 and (cin != cout or stride != 1):
                macs += _conv(cin, cout, 1, 1, t, h_out)
            cin, h = cout, h_out
        parts[stage.name] = macs
        if i == 0 and spec.temporal_pool and t > 1:
            t = t // 2
    parts["head"] = cin * spec.num_classes
    return parts if breakdown else sum(parts.values())


def selection_macs(spec: SelectionSpec = SelectionSpec(), frames: int = 1, size: Optional[int] = None,
                   num_stages: int = 0, num_frames_out: int = 0, classifier_classes: int = 0) -> int:
    """Multiply-accumulates of the selection network's MobileNetV2 on `frames` frames.

    The two heads (T + K outputs over the frame-averaged feature) are added once per clip when their
    sizes are given. `classifier_classes` adds a per-frame classifier: MobileNetV2 as published
    (1000 ImageNet classes) costs 0.082 GMACs a 112x112 frame, the figure ARCHITECTURE.md quotes;
    our inference graph has no such classifier and costs 0.0809 a frame plus the heads.
    """
    h = spec.policy_size if size is None else int(size)
    w = spec.width_mult
    c = make_divisible(spec.stem_channels * w)
    h = _out(h, 3, 2, 1)
    macs = _conv(3, c, 1, 3, 1, h)
    for t, ch, n, s in spec.settings:
        cout = make_divisible(ch * w)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            if t != 1:
                macs += _conv(c, hidden, 1, 1, 1, h)
            h_out = _out(h, 3, stride, 1)
            macs += _conv(hidden, hidden, 1, 3, 1, h_out, groups=hidden)
            macs += _conv(hidden, cout, 1, 1, 1, h_out)
            c, h = cout, h_out
    last = make_divisible(spec.last_channels * max(1.0, w))
    macs += _conv(c, last, 1, 1, 1, h)
    per_frame = macs + last * int(classifier_classes)
    return per_frame * int(frames) + last * (num_stages + num_frames_out)


def selection_features(spec: SelectionSpec = SelectionSpec()) -> int:
    return make_divisible(spec.last_channels * max(1.0, spec.width_mult))


def gflops(arch: Union[str, BackboneSpec], mask: Mask = None, frames: Optional[int] = None,
           crop: Optional[int] = None) -> float:
    spec = get_spec(arch) if isinstance(arch, str) else arch
    return backbone_macs(spec, mask, frames, crop) / 1e9


@dataclass(frozen=True)
class CostRow:
    mask: str
    frames: int
    gflops: float
    ratio: float  # to Upper: all stages 3D, all T frames


def cost_table(spec: BackboneSpec, frames: Optional[int] = None, crop: Optional[int] = None) -> List[CostRow]:
    """GFLOPs for every stage mask and every kept-frame count 1..T, with the ratio to Upper."""
    t = spec.num_frames if frames is None else int(frames)
    upper = backbone_macs(spec, None, t, crop)
    rows = []
    for m in reversed(all_masks(spec.num_stages_3d)):  # Upper first
        for f in range(t, 0, -1):
            macs = backbone_macs(spec, m, f, crop)
            rows.append(CostRow(m, f, macs / 1e9, macs / upper))
    return rows


__all__ = ["backbone_macs", "selection_macs", "selection_features", "gflops", "cost_table", "CostRow",
           "mask_to_str"]
