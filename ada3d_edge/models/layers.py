"""Convolutions that can drop to their temporal centre tap, and run as real 2D convs over frames."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TemporalConv(nn.Conv3d):
    """A kt x kh x kw Conv3d (no temporal stride) that can be degraded to 2D.

    `forward(x, degrade=True)` keeps only the centre tap `w[:, :, kt // 2 : kt // 2 + 1]` with
    temporal padding 0, i.e. a 2D conv applied to each frame (the paper's slicing). When
    `fold_frames` is set, any conv whose effective temporal kernel is 1 runs as `conv2d` on frames
    folded into the batch, so exported graphs hold real 2D convolutions.
    """

    fold_frames: bool = False

    def __init__(self, cin: int, cout: int, kernel_t: int, kernel_s: int, stride_s: int = 1):
        super().__init__(cin, cout, (kernel_t, kernel_s, kernel_s), stride=(1, stride_s, stride_s),
                         padding=(kernel_t // 2, kernel_s // 2, kernel_s // 2), bias=False)

    def effective_weight(self, degrade: bool) -> torch.Tensor:
        kt = self.weight.shape[2]
        if degrade and kt > 1:
            return self.weight[:, :, kt // 2: kt // 2 + 1]
        return self.weight

    def forward(self, x: torch.Tensor, degrade: bool = False) -> torch.Tensor:  # (B, C, T, H, W)
        w = self.effective_weight(degrade)
        kt = w.shape[2]
        if kt == 1 and self.fold_frames:
            b, c, t, h, wd = x.shape
            x2 = x.transpose(1, 2).reshape(b * t, c, h, wd)
            y = F.conv2d(x2, w[:, :, 0], None, self.stride[1:], self.padding[1:])
            return y.reshape(b, t, y.shape[1], y.shape[2], y.shape[3]).transpose(1, 2)
        return F.conv3d(x, w, None, self.stride, (kt // 2,) + tuple(self.padding[1:]))


def set_fold_frames(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Run every temporal-kernel-1 conv in `module` as conv2d over folded frames (for export)."""
    for m in module.modules():
        if isinstance(m, TemporalConv):
            m.fold_frames = enabled
    return module
