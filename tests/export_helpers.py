"""Tiny checkpoints for the export, engine and parity tests (imported as ``export_helpers``).

Weights are perturbed away from their init (BN statistics, head scales, policy biases) so logits are
O(1) and greedy actions vary: a parity or verification check on all-zero outputs would prove nothing.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ada3d_edge import preprocess
from ada3d_edge.models import Ada3DConfig, build_ada3d
from ada3d_edge.train.bn_calibration import calibrate_bn
from ada3d_edge.train.checkpoint import save_checkpoint

CLASSES = ["a", "b", "c", "d"]
MEAN = [0.45, 0.45, 0.45]
STD = [0.225, 0.225, 0.225]


def make_frames(seed: int, num_frames: int = 4, height: int = 40, width: int = 52) -> np.ndarray:
    """``(T, H, W, 3) uint8`` clip of coarse random blocks plus noise, different in every frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(num_frames, 5, 6, 3)).astype(np.float32)
    big = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_NEAREST) for c in coarse])
    return np.clip(big + rng.normal(0.0, 20.0, big.shape), 0, 255).astype(np.uint8)


def _samples(num_frames: int, crop: int, policy_size: int, n: int = 16):
    crops = [preprocess.center_crop_frames(make_frames(1000 + i, num_frames), crop) for i in range(n)]
    clips = np.stack([preprocess.to_clip_tensor(c, MEAN, STD) for c in crops])
    policy = np.stack([preprocess.to_policy_tensor(c, policy_size, MEAN, STD) for c in crops])
    return torch.from_numpy(clips), torch.from_numpy(policy)


def _calibrate_batchnorm(model, num_frames: int, crop: int, policy_size: int) -> None:
    """Random BN affine params, running statistics measured on sample clips (activations stay O(1))."""
    bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        clips, policy = _samples(num_frames, crop, policy_size)
        model.train()
        model.selection.frame_features(policy)
        model.backbone(clips)
        for bn in bns:
            bn.momentum = 0.1
    model.eval()


def _spread_policy_heads(model, num_frames: int, crop: int, policy_size: int) -> None:
    """Centre and scale the policy heads on sample clips so greedy actions differ between clips."""
    _, policy = _samples(num_frames, crop, policy_size)
    model.eval()
    with torch.no_grad():
        feats = model.selection.head_norm(model.selection.frame_features(policy).mean(1))  # (16, F)
        for head in (model.selection.frame_head, model.selection.stage_head):
            head.weight.normal_(0.0, 1.0)
            proj = feats @ head.weight.T
            scale = 2.0 / proj.std(0).clamp_min(1e-3)
            head.weight.mul_(scale[:, None])
            head.bias.copy_(-proj.mean(0) * scale)
        model.selection.frame_head.bias.add_(1.5)  # keep about two thirds of the frames
    model.train()


def make_checkpoint(path: Path, arch: str = "slow_tiny", num_frames: int = 4, crop: int = 32,
                    policy_size: int = 32, seed: int = 0, threshold: float = 0.5) -> Path:
    """Save a tiny Ada3D checkpoint with non-trivial weights and complete ``data``."""
    torch.manual_seed(seed)
    cfg = Ada3DConfig(arch=arch, num_classes=len(CLASSES), num_frames=num_frames, selection_width=0.35,
                      policy_size=policy_size, backbone_overrides={"crop_size": crop})
    model = build_ada3d(cfg)
    _calibrate_batchnorm(model, num_frames, crop, policy_size)
    clips, _ = _samples(num_frames, crop, policy_size)
    calibrate_bn(model.backbone, [clips[:8], clips[8:]])  # each engine then folds its own statistics
    model.eval()
    with torch.no_grad():
        model.backbone.head.proj.weight.normal_(0.0, 1.0)
    _spread_policy_heads(model, num_frames, crop, policy_size)
    data = {"num_frames": num_frames, "stride": 2, "crop_size": crop, "test_crop_size": crop,
            "policy_size": policy_size, "mean": MEAN, "std": STD, "classes": CLASSES,
            "multi_label": False, "threshold": threshold}
    return save_checkpoint(path, {"model_config": cfg.to_dict(), "data": data, "stage": "joint", "epoch": 0,
                                  "step": 0, "model": model.state_dict(), "optimizer": None,
                                  "scheduler": None, "metrics": {}, "rng": None})


def assert_backbone_equals(bundle, reference, backend, num_frames: int, crop: int, seed: int = 0) -> None:
    """Every configuration of ``bundle`` at every T' of ``frame_counts`` and batch 1 and 2: the backbone
    ``backend`` loaded (another ONNX Runtime layout) gives ``reference``'s logits (the one graph)."""
    from ada3d_edge.bundle import BACKBONE_NAME
    from ada3d_edge.export.verify import frame_counts
    from ada3d_edge.runtime.predictor import stage_mask_feed

    rng = np.random.default_rng(seed)
    for mask in bundle.masks:
        for t in frame_counts(num_frames):
            for batch in (1, 2):
                feeds = {"clip": rng.standard_normal((batch, 3, t, crop, crop)).astype(np.float32),
                         "stage_mask": stage_mask_feed(mask)}
                want = reference.run(BACKBONE_NAME, feeds)["logits"]
                got = backend.run(BACKBONE_NAME, feeds)["logits"]
                assert got.shape == want.shape == (batch, len(bundle.manifest.classes))
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{mask} T'={t} B={batch}")
