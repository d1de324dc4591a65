"""A backbone with one stage mask baked in: what export traces and the PyTorch reference runs."""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbone import Backbone


class FixedMaskBackbone(nn.Module):
    """The backbone with one stage mask baked in: ``forward(clip (B, 3, T', S, S)) -> logits (B, C)``."""

    def __init__(self, backbone: Backbone, mask: str):
        super().__init__()
        backbone.normalize_mask(mask, 1)  # ValueError for a bad mask, naming the stages
        self.backbone = backbone
        self.mask = mask

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.backbone(clip, self.mask)


class MaskInputBackbone(nn.Module):
    """The backbone with the stage mask as an input, as the bundle's one graph takes it:
    ``forward(clip (B, 3, T', S, S), stage_mask (K,) int) -> logits (B, C)``."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, clip: torch.Tensor, stage_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(clip, stage_mask.cpu())
