"""A tiny bundle built without the real exporter, for runtime tests (needs torch + onnx).

Import from tests as ``from fake_bundle import make_fake_bundle, make_clip`` (pytest puts tests/ on
sys.path: rootdir-relative, no tests/__init__.py).

The fake selection net reads the policy input ``(B, 3, T, P, P)``:
- frame t is kept when the top half of frame t is bright (``frame_probs = sigmoid(4 * mean)``);
- stage k stays 3D when channel k of the bottom halves is bright (``stage_probs``).
``make_clip`` paints frames that produce chosen actions. Backbones average-pool over (T', H, W)
and apply a Linear(3, C) with weights seeded by the mask, so every configuration differs.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ada3d_edge.bundle import (EngineEntry, Manifest, PolicyEntry, PolicySplit, all_masks, engine_name,
                               write_manifest)

NUM_FRAMES = 4
CROP = 16
POLICY = 8
STAGES = ("res4", "res5")
CLASSES = ("a", "b", "c", "d", "e")
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


def _torch_modules(num_stages: int, num_classes: int) -> dict:
    import torch
    from torch import nn

    class Policy(nn.Module):
        def forward(self, frames):  # (B, 3, T, P, P)
            half = frames.shape[-2] // 2
            frame_probs = torch.sigmoid(4.0 * frames[:, :, :, :half, :].mean(dim=(1, 3, 4)))
            stage_probs = torch.sigmoid(4.0 * frames[:, :num_stages, :, half:, :].mean(dim=(2, 3, 4)))
            return frame_probs, stage_probs

    class Backbone(nn.Module):
        def __init__(self, seed: int) -> None:
            super().__init__()
            gen = torch.Generator().manual_seed(1000 + seed)
            self.fc = nn.Linear(3, num_classes)
            with torch.no_grad():
                self.fc.weight.copy_(torch.randn(num_classes, 3, generator=gen))
                self.fc.bias.copy_(torch.randn(num_classes, generator=gen))

        def forward(self, clip):  # (B, 3, T', S, S)
            return self.fc(clip.mean(dim=(2, 3, 4)))

    modules = {"policy": Policy().eval()}
    for mask in all_masks(num_stages):
        modules[engine_name(mask)] = Backbone(int(mask, 2)).eval()
    return modules


def fake_modules(num_stages: int = len(STAGES), num_classes: int = len(CLASSES)) -> dict:
    """The PyTorch modules behind the fake bundle's ONNX files, by model name."""
    return _torch_modules(num_stages, num_classes)


@functools.lru_cache(maxsize=None)
def _onnx_files(num_stages: int, num_classes: int, num_frames: int, crop: int, policy: int) -> dict:
    """ONNX bytes per file name, exported once per process."""
    import torch

    files = {}
    for name, module in _torch_modules(num_stages, num_classes).items():
        buf = io.BytesIO()
        if name == "policy":
            args = (torch.zeros(1, 3, num_frames, policy, policy),)
            inputs, outputs = ["frames"], ["frame_probs", "stage_probs"]
            axes = {"frames": {0: "B"}, "frame_probs": {0: "B"}, "stage_probs": {0: "B"}}
        else:
            args = (torch.zeros(1, 3, num_frames, crop, crop),)
            inputs, outputs = ["clip"], ["logits"]
            axes = {"clip": {0: "B", 2: "T"}, "logits": {0: "B"}}
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        files[f"{name}.onnx"] = buf.getvalue()
    return files


def make_fake_bundle(out_dir: str | Path, *, stages: Sequence[str] = STAGES, classes: Sequence[str] = CLASSES,
                     num_frames: int = NUM_FRAMES, crop_size: int = CROP, policy_size: int = POLICY,
                     multi_label: bool = False, threshold: float = 0.5, selection=None) -> Path:
    """Write a complete bundle (policy + 2^K backbones + manifest with real sha256) to ``out_dir``.

    ``selection``: a real ``SelectionNet`` (K stages, T frames) exported as ``policy.onnx`` and as the
    split ``policy_features.onnx`` / ``policy_heads.onnx`` (manifest ``policy_split``) in place of the
    fake policy; without it the bundle has no split, as bundles exported before it.
    """
    import warnings

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = _onnx_files(len(stages), len(classes), num_frames, crop_size, policy_size)
    for name, data in files.items():
        (out / name).write_bytes(data)
    split = None
    if selection is not None:
        from ada3d_edge.export.onnx_export import export_policy, export_policy_split

        export_policy(selection, out / "policy.onnx", num_frames, policy_size)
        export_policy_split(selection, out / "policy_features.onnx", out / "policy_heads.onnx", policy_size)
        split = PolicySplit.for_files(out, "policy_features.onnx", "policy_heads.onnx", selection.num_features)
    manifest = Manifest(
        arch="fake_tiny", stages=list(stages), num_frames=num_frames, stride=2, crop_size=crop_size,
        policy_size=policy_size, mean=list(MEAN), std=list(STD), classes=list(classes),
        multi_label=multi_label, threshold=threshold,
        policy=PolicyEntry.for_file(out, "policy.onnx", gflops_per_frame=0.01),
        engines=[EngineEntry.for_file(out, f"{engine_name(m)}.onnx", m, gflops_per_frame=1.0 + m.count("1"))
                 for m in all_masks(len(stages))],
        policy_split=split,
        versions={"ada3d_edge": "test", "opset": 17}, created="2024-01-01T00:00:00Z",
    )
    write_manifest(out, manifest)
    return out


def make_clip(keep: Sequence[bool], stage_mask: str, size: int = CROP, seed: int = 0,
              frame_values: Sequence[int] | None = None) -> np.ndarray:
    """Frames ``(T, size, size, 3) uint8`` that make the fake policy pick ``keep`` and ``stage_mask``.

    ``frame_values`` overrides the top-half brightness per frame (255 keeps, 0 drops; ~127 gives
    a frame probability of about 0.7).
    """
    rng = np.random.default_rng(seed)
    t = len(keep)
    frames = rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)
    half = size // 2
    values = frame_values if frame_values is not None else [255 if k else 0 for k in keep]
    for i, v in enumerate(values):
        frames[i, :half] = v
    for k, bit in enumerate(stage_mask):
        frames[:, half:, :, k] = 255 if bit == "1" else 0
    return frames
