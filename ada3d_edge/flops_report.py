"""The `ada3d flops` report: a table (or JSON) of cost per stage mask and kept-frame count."""
from __future__ import annotations

import json
from typing import Optional

from .flops import backbone_macs, cost_table, selection_macs
from .models.specs import SelectionSpec, get_spec


def flops_report(arch: str, frames: Optional[int] = None, crop: Optional[int] = None,
                 policy_width: float = 1.0, as_json: bool = False) -> str:
    spec = get_spec(arch)
    t = spec.num_frames if frames is None else frames
    c = spec.crop_size if crop is None else crop
    rows = cost_table(spec, t, c)
    sel = SelectionSpec(width_mult=policy_width)
    policy = selection_macs(sel, frames=t, num_stages=spec.num_stages_3d, num_frames_out=t) / 1e9
    upper = backbone_macs(spec, None, t, c) / 1e9
    if as_json:
        return json.dumps({
            "arch": arch, "frames": t, "crop": c, "stages": list(spec.degradable),
            "upper_gflops": upper, "policy_gflops": policy, "policy_width": policy_width,
            "rows": [{"mask": r.mask, "frames": r.frames, "gflops": r.gflops, "ratio": r.ratio} for r in rows],
        }, indent=2)
    lines = [f"{arch}: T={t}, crop={c}, degradable stages {', '.join(spec.degradable)} (mask bit 1 = 3D)",
             f"Upper (all 3D, {t} frames): {upper:.2f} GFLOPs; selection network "
             f"(MobileNetV2 x{policy_width} @ {sel.policy_size}, {t} frames): {policy:.3f} GFLOPs",
             "", f"{'mask':>{max(4, spec.num_stages_3d)}}  {'frames':>6}  {'GFLOPs':>9}  {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r.mask:>{max(4, spec.num_stages_3d)}}  {r.frames:>6}  {r.gflops:>9.2f}  {r.ratio:>6.3f}")
    return "\n".join(lines)
