"""3D ResNet backbones (SlowOnly / I3D) with per-stage 3D/2D masks and any frame count T'."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .layers import ConfigBatchNorm3d, TemporalConv
from .specs import BackboneSpec, StageSpec, get_spec, mask_to_str, str_to_mask

MaskLike = Union[None, str, Sequence[int], torch.Tensor]
CONFIG_BN_KEYS = ("config_mean", "config_var", "bn_calibrated")


def is_config_bn_key(key: str) -> bool:
    """State-dict keys of the per-configuration BN statistics (absent from older and foreign checkpoints)."""
    return key.rsplit(".", 1)[-1] in CONFIG_BN_KEYS


class Stem(nn.Module):
    def __init__(self, spec: BackboneSpec, num_configs: int = 1):
        super().__init__()
        self.conv = TemporalConv(3, spec.stem_width, spec.stem_kernel_t, spec.stem_kernel_s, 2)
        self.bn = ConfigBatchNorm3d(spec.stem_width, num_configs)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor, degrade: bool = False) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x, degrade))))


class Bottleneck(nn.Module):
    """conv_a (kt x 1 x 1) -> conv_b (1 x 3 x 3, spatial stride) -> conv_c (1 x 1 x 1), + shortcut."""

    def __init__(self, cin: int, width: int, cout: int, kernel_t: int, stride: int, num_configs: int = 1):
        super().__init__()
        self.conv_a = TemporalConv(cin, width, kernel_t, 1)
        self.bn_a = ConfigBatchNorm3d(width, num_configs)
        self.conv_b = TemporalConv(width, width, 1, 3, stride)
        self.bn_b = ConfigBatchNorm3d(width, num_configs)
        self.conv_c = TemporalConv(width, cout, 1, 1)
        self.bn_c = ConfigBatchNorm3d(cout, num_configs)
        nn.init.zeros_(self.bn_c.weight)  # zero-init the last BN of each residual branch
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: Optional[nn.Module] = None
        if cin != cout or stride != 1:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", TemporalConv(cin, cout, 1, 1, stride))
            self.shortcut.add_module("bn", ConfigBatchNorm3d(cout, num_configs))

    def forward(self, x: torch.Tensor, degrade: bool = False) -> torch.Tensor:
        y = self.relu(self.bn_a(self.conv_a(x, degrade)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        if self.shortcut is not None:
            x = self.shortcut.bn(self.shortcut.conv(x))
        return self.relu(x + y)


class ResStage(nn.Module):
    def __init__(self, spec: StageSpec, cin: int, expansion: int, num_configs: int = 1):
        super().__init__()
        self.name = spec.name
        cout = spec.width * expansion
        self.blocks = nn.ModuleList(
            Bottleneck(cin if i == 0 else cout, spec.width, cout, spec.kernel(i),
                       spec.spatial_stride if i == 0 else 1, num_configs)
            for i in range(spec.depth))

    def forward(self, x: torch.Tensor, degrade: bool = False) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, degrade)
        return x


class TemporalMaxPool(nn.Module):
    """I3D's max-pool (2,1,1) after res2; a single frame passes through unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < 2:
            return x
        return nn.functional.max_pool3d(x, (2, 1, 1), (2, 1, 1))


class Head(nn.Module):
    """Adaptive average pool over (T', H, W) -> dropout -> linear."""

    def __init__(self, num_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.pool(x).flatten(1)))


class Backbone(nn.Module):
    """The whole network is a list: stem, stages, head. Degradable stages are data (`spec.degradable`).

    `forward(clip, mask)`: clip `(B, 3, T', H, W)` with any 1 <= T' <= T; mask gives per degradable
    stage 1 (3D) or 0 (degraded 2D): None (all 3D), a bit string, a `(K,)` sequence for the whole
    batch, or a `(B, K)` tensor, one mask per sample (samples are grouped by mask, so each gets
    exactly what it would get alone; BatchNorm in train mode then sees the group's statistics).

    Every BatchNorm keeps one set of running statistics per mask (`ConfigBatchNorm3d`); a mask whose
    set has been measured (`bn_calibrated[mask index]`, see `ada3d_edge.train.bn_calibration`) uses
    it in eval mode, the others use the shared statistics.
    """

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        self.num_configs = 2 ** spec.num_stages_3d
        self.stem = Stem(spec, self.num_configs)
        stages: List[nn.Module] = []
        cin = spec.stem_width
        for i, s in enumerate(spec.stages):
            stages.append(ResStage(s, cin, spec.expansion, self.num_configs))
            cin = s.width * spec.expansion
        self.stages = nn.ModuleList(stages)
        self.temporal_pool = TemporalMaxPool() if spec.temporal_pool else None
        self.head = Head(cin, spec.num_classes, spec.dropout)
        self.num_features = cin
        self.num_classes = spec.num_classes
        self.stage_names = spec.degradable
        self.register_buffer("bn_calibrated", torch.zeros(self.num_configs, dtype=torch.bool))
        self.config_bns: List[ConfigBatchNorm3d] = [m for m in self.modules() if isinstance(m, ConfigBatchNorm3d)]
        self._init_weights()

    @staticmethod
    def mask_index(mask: torch.Tensor) -> int:
        """(K,) bool mask -> its configuration index (the bit string read as a binary number)."""
        return int(mask_to_str(mask.int().tolist()) or "0", 2)

    def _use_config_stats(self, mask: torch.Tensor) -> None:
        idx = self.mask_index(mask)
        active = idx if bool(self.bn_calibrated[idx]) else None
        for bn in self.config_bns:
            bn.active = active

    @property
    def num_stages_3d(self) -> int:
        return len(self.stage_names)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def normalize_mask(self, mask: MaskLike, batch: int) -> torch.Tensor:
        """Any accepted mask form -> a `(K,)` or `(B, K)` bool tensor; clear error otherwise."""
        k = self.num_stages_3d
        if mask is None:
            return torch.ones(k, dtype=torch.bool)
        if isinstance(mask, str):
            if len(mask) != k or set(mask) - {"0", "1"}:
                raise ValueError(f"mask {mask!r} must be {k} characters of 0/1 for stages {self.stage_names}")
            return torch.tensor(str_to_mask(mask), dtype=torch.bool)
        m = torch.as_tensor(mask).bool().cpu()
        if m.shape == (k,) or m.shape == (batch, k):
            return m
        raise ValueError(f"mask of shape {tuple(m.shape)} does not fit: expected ({k},) or ({batch}, {k}) "
                         f"for stages {self.stage_names}")

    def forward_features(self, clip: torch.Tensor, mask: MaskLike = None) -> torch.Tensor:
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(f"clip must be (B, 3, T', H, W), got {tuple(clip.shape)}")
        m = self.normalize_mask(mask, clip.shape[0])
        if m.dim() == 2:
            return self._forward_per_sample(clip, m)
        self._use_config_stats(m)
        is3d = dict(zip(self.stage_names, m.tolist()))
        x = self.stem(clip, degrade=not is3d.get("stem", True))
        for i, stage in enumerate(self.stages):
            x = stage(x, degrade=not is3d.get(stage.name, True))
            if i == 0 and self.temporal_pool is not None:
                x = self.temporal_pool(x)
        return x

    def _forward_per_sample(self, clip: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(masks.long(), dim=0, return_inverse=True)
        if len(uniq) == 1:
            return self.forward_features(clip, uniq[0])
        outs = [None] * len(uniq)
        for g in range(len(uniq)):
            idx = (inverse == g).nonzero().flatten().to(clip.device)
            outs[g] = (idx, self.forward_features(clip.index_select(0, idx), uniq[g]))
        first = outs[0][1]
        y = first.new_empty((clip.shape[0],) + tuple(first.shape[1:]))
        for idx, out in outs:
            y[idx] = out
        return y

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, clip: torch.Tensor, mask: MaskLike = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(clip, mask))


def build_backbone(arch: str, num_classes: int = 400, **overrides) -> Backbone:
    """Build a registered backbone (`slow_r50`, `i3d_r50`, `slow_tiny`, `i3d_tiny`, ...).

    `overrides` are spec fields (e.g. `temporal_pool=True`, `crop_size=112`, `depths=(1,1,1,1)`,
    `widths=(8,16,32,64)`, `stem_width=8`, `dropout=0.0`, `num_frames=8`).
    """
    return Backbone(get_spec(arch, num_classes=num_classes, **overrides))
