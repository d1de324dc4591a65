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


class ConfigBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d with one more set of running statistics per stage configuration (2^K masks).

    The 2^K configurations share every weight, but a degraded stage (centre tap only) produces
    activations with other statistics than its 3D version, so one set of running statistics fits
    none of them well (measured on the demo: static classes 67% with both stages 2D, 97% once the
    statistics are recalibrated for that mask). As weight-shared networks do (Once-for-All's BN
    calibration, slimmable networks' private BN), each configuration gets its own statistics,
    measured after training (`ada3d_edge.train.bn_calibration`). Each exported engine folds its
    own, so this costs nothing at run time.

    `active` (set by the backbone for every forward) indexes the configuration; in eval mode its
    statistics are used when `active` is not None, else the shared ones. Training mode always
    normalises with the batch statistics, as plain BatchNorm does.
    """

    def __init__(self, num_features: int, num_configs: int):
        super().__init__(num_features)
        self.register_buffer("config_mean", torch.zeros(num_configs, num_features))
        self.register_buffer("config_var", torch.ones(num_configs, num_features))
        self.active: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.active is None:
            return super().forward(x)
        return F.batch_norm(x, self.config_mean[self.active], self.config_var[self.active],
                            self.weight, self.bias, False, 0.0, self.eps)
