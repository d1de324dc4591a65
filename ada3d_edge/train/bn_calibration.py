"""BN calibration: measure each stage configuration's BatchNorm statistics after training.

The backbone's 2^K configurations share their weights but not their activation statistics (a
degraded stage sums one temporal tap instead of three). `calibrate_bn` runs training clips through
every configuration with BatchNorm in train mode and stores, per configuration, the average of the
batch statistics (PySlowFast's precise BN, once per configuration, as Once-for-All calibrates each
sub-network). The shared running statistics, the modules' modes and the weights are left as they
were; only `ConfigBatchNorm3d.config_mean/config_var` and `Backbone.bn_calibrated` change.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from ..models.backbone import Backbone
from ..models.specs import all_masks, str_to_mask


def training_clips(loader: Iterable, device: torch.device, max_batches: int) -> Iterator[torch.Tensor]:
    """The first `max_batches` non-empty clip batches `(B, 3, T, H, W)` of a training DataLoader."""
    n = 0
    for batch in loader:
        if n >= max_batches:
            return
        if batch["clip"] is None:
            continue
        n += 1
        yield batch["clip"].to(device, non_blocking=True)


def _drop_frames(clip: torch.Tensor, keep_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each frame with `keep_prob` (at least one), the same frames for the whole batch."""
    keep = torch.rand(clip.shape[2], generator=generator) < keep_prob
    if not keep.any():
        keep[torch.randint(clip.shape[2], (1,), generator=generator)] = True
    return clip.index_select(2, keep.nonzero().flatten().to(clip.device))


@torch.no_grad()
def calibrate_bn(backbone: Backbone, clips: Iterable[torch.Tensor], masks: Optional[Sequence[str]] = None,
                 frame_keep_prob: Optional[float] = None, seed: int = 0,
                 progress: bool = False) -> Dict[str, int]:
    """Measure and store the BatchNorm statistics of every mask in `masks` (default: all 2^K).

    Every batch of `clips` runs through every mask (frames dropped at random first when
    `frame_keep_prob` is set, the same frames for all masks). Returns {mask: batches seen}.
    ValueError when `clips` is empty.
    """
    k = backbone.num_stages_3d
    masks = list(masks) if masks is not None else all_masks(k)
    for m in masks:
        backbone.normalize_mask(m, 1)  # a clear error for a wrong mask
    bns = backbone.config_bns
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone(), bn.momentum)
             for bn in bns]
    modes = {mod: mod.training for mod in backbone.modules()}
    sums = {m: [(torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_var)) for bn in bns]
            for m in masks}
    gen = torch.Generator().manual_seed(seed)
    batches = 0
    try:
        backbone.train()
        for bn in bns:
            bn.momentum = 1.0  # running statistics := this batch's statistics (unbiased variance)
        for clip in tqdm(clips, desc="BN calibration", disable=not progress, leave=False):
            if frame_keep_prob is not None:
                clip = _drop_frames(clip, frame_keep_prob, gen)
            for m in masks:
                backbone.forward_features(clip, m)
                for (s_mean, s_var), bn in zip(sums[m], bns):
                    s_mean += bn.running_mean
                    s_var += bn.running_var
            batches += 1
        if batches == 0:
            raise ValueError("BN calibration got no clips")
        for m in masks:
            idx = backbone.mask_index(torch.tensor(str_to_mask(m), dtype=torch.bool)) if k else 0
            for (s_mean, s_var), bn in zip(sums[m], bns):
                bn.config_mean[idx] = s_mean / batches
                bn.config_var[idx] = s_var / batches
            backbone.bn_calibrated[idx] = True
    finally:
        for bn, (mean, var, tracked, momentum) in zip(bns, saved):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(tracked)
            bn.momentum = momentum
        for mod, training in modes.items():
            mod.train(training)
    return {m: batches for m in masks}


def is_calibrated(backbone: Backbone) -> bool:
    """Whether every configuration has its own measured statistics."""
    return bool(backbone.bn_calibrated.all())


__all__ = ["calibrate_bn", "training_clips", "is_calibrated"]
