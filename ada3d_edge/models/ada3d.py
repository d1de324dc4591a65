"""Ada3D: the selection network decides frames (u) and 3D stages (v); the backbone runs the packed clip."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .backbone import Backbone, build_backbone, is_config_bn_key
from .selection import Actions, SelectionNet, greedy_actions, sample_actions
from .specs import selection_spec


def pack_frames(clip: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Gather one sample's kept frames in temporal order: (3, T, H, W), (T,) bool -> (3, T', H, W)."""
    idx = keep.nonzero().flatten().to(clip.device)
    if idx.numel() == 0:
        raise ValueError("at least one frame must be kept")
    return clip.index_select(1, idx)


class Ada3D(nn.Module):
    """Selection network + backbone.

    `forward(clip, actions)`: clip `(B, 3, T, H, W)`; `actions.frames` `(B, T)` bool and
    `actions.stages` `(B, K)` bool (1 = 3D). Samples are grouped by kept-frame count T'; each group
    runs the backbone on its packed clips with per-sample stage masks. Returns logits `(B, C)`.
    """

    def __init__(self, backbone: Backbone, selection: SelectionNet, config: Optional[Dict[str, Any]] = None):
        super().__init__()
        if selection.num_stages != backbone.num_stages_3d:
            raise ValueError(f"selection network has {selection.num_stages} stage outputs, backbone has "
                             f"{backbone.num_stages_3d} degradable stages {backbone.stage_names}")
        self.backbone = backbone
        self.selection = selection
        self.config = dict(config or {})

    @property
    def num_frames(self) -> int:
        return self.selection.num_frames

    def select(self, policy_input: torch.Tensor, greedy: bool = True, threshold: float = 0.5,
               generator: Optional[torch.Generator] = None) -> Tuple[Actions, torch.Tensor, torch.Tensor]:
        """Run the selection network; returns (actions, frame_probs, stage_probs)."""
        m, n = self.selection(policy_input)
        acts = greedy_actions(m, n, threshold) if greedy else sample_actions(m, n, generator)
        return acts, m, n

    def forward(self, clip: torch.Tensor, actions: Actions) -> torch.Tensor:
        frames, stages = actions.frames.bool(), actions.stages.bool()
        b, t = clip.shape[0], clip.shape[2]
        if frames.shape != (b, t):
            raise ValueError(f"frame actions {tuple(frames.shape)} do not match clip (B={b}, T={t})")
        if frames.all():
            return self.backbone(clip, stages)
        counts = frames.sum(1)
        out: Optional[torch.Tensor] = None
        for c in counts.unique().tolist():
            idx = (counts == c).nonzero().flatten()
            packed = torch.stack([pack_frames(clip[i], frames[i]) for i in idx.tolist()])
            logits = self.backbone(packed, stages[idx])
            if out is None:
                out = logits.new_empty((b, logits.shape[1]))
            out[idx.to(logits.device)] = logits
        return out


def load_ada3d_state(model: nn.Module, state: Dict[str, torch.Tensor], strict: bool = True) -> None:
    """`load_state_dict` that accepts checkpoints written before two sets of statistics existed:
    per-configuration BN statistics (those configurations stay uncalibrated: shared statistics) and
    the selection heads' feature standardisation (left at mean 0, variance 1: the identity, which is
    what those checkpoints were trained with)."""
    res = model.load_state_dict(state, strict=False)
    missing = [k for k in res.missing_keys if not (is_config_bn_key(k) or k.startswith("selection.head_norm."))]
    if strict and (missing or res.unexpected_keys):
        raise RuntimeError(f"state dict does not fit the model: missing {missing[:10]}, "
                           f"unexpected {list(res.unexpected_keys)[:10]}")


@dataclass
class Ada3DConfig:
    """Everything needed to rebuild the model from a checkpoint (stored beside the weights)."""

    arch: str = "slow_tiny"
    num_classes: int = 8
    num_frames: int = 8
    backbone_overrides: Dict[str, Any] = field(default_factory=dict)
    selection_width: float = 1.0
    policy_size: int = 112
    selection_depth: Optional[int] = None
    selection_groups: Optional[int] = None
    selection_last_channels: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def build_ada3d(cfg: Ada3DConfig) -> Ada3D:
    overrides = dict(cfg.backbone_overrides)
    overrides.setdefault("num_frames", cfg.num_frames)
    backbone = build_backbone(cfg.arch, num_classes=cfg.num_classes, **overrides)
    selection = SelectionNet(cfg.num_frames, backbone.num_stages_3d, num_classes=cfg.num_classes,
                             spec=selection_spec(cfg.selection_width, cfg.policy_size, cfg.selection_depth,
                                                 cfg.selection_groups, cfg.selection_last_channels))
    return Ada3D(backbone, selection, config=cfg.to_dict())
