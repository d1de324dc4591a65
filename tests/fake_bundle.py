"""A tiny bundle built without the real exporter, for runtime tests (needs torch + onnx).

Import from tests as ``from fake_bundle import make_fake_bundle, make_clip`` (pytest puts tests/ on
sys.path: rootdir-relative, no tests/__init__.py).

The fake selection net reads the policy input ``(B, 3, T, P, P)``:
- frame t is kept when the top half of frame t is bright (``frame_probs = sigmoid(4 * mean)``);
- stage k stays 3D when channel k of the bottom halves is bright (``stage_probs``).
``make_clip`` paints frames that produce chosen actions. The backbone (format 2: one graph, inputs
``clip`` and ``stage_mask``) average-pools over (T', H, W) and applies a Linear(3, C) whose weights
are gathered by the configuration index (seeded per mask), so every configuration differs. Its weights
live in ``backbone.weights``; the segment layout is one segment ``net`` with one variant per mask.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ada3d_edge.bundle import (BackboneEntry, ConfigEntry, Manifest, PolicyEntry, PolicySplit, SegmentEntry,
                               SegmentVariantEntry, all_masks, engine_name, write_manifest)

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

    class SharedBackbone(nn.Module):
        """Every configuration in one module: the Linear of configuration ``int(mask, 2)``."""

        def __init__(self) -> None:
            super().__init__()
            per_mask = [Backbone(i) for i in range(2 ** num_stages)]
            self.weight = nn.Parameter(torch.stack([m.fc.weight.detach() for m in per_mask]))
            self.bias = nn.Parameter(torch.stack([m.fc.bias.detach() for m in per_mask]))
            self.register_buffer("pow2", torch.tensor([2 ** (num_stages - 1 - i) for i in range(num_stages)]))

        def forward(self, clip, stage_mask):  # (B, 3, T', S, S), (K,) int64
            index = (stage_mask * self.pow2).sum()
            return clip.mean(dim=(2, 3, 4)) @ self.weight[index].t() + self.bias[index]

    modules = {"policy": Policy().eval(), "backbone": SharedBackbone().eval()}
    for mask in all_masks(num_stages):  # one configuration alone: the reference, and the segment files
        modules[engine_name(mask)] = Backbone(int(mask, 2)).eval()
    return modules


def fake_modules(num_stages: int = len(STAGES), num_classes: int = len(CLASSES)) -> dict:
    """The PyTorch modules behind the fake bundle's ONNX files, by model name: ``policy``, ``backbone``
    (clip, stage_mask) and, per mask, ``backbone_<mask>`` (clip) computing that configuration alone."""
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
            file = "policy.onnx"
        elif name == "backbone":
            args = (torch.zeros(1, 3, num_frames, crop, crop), torch.ones(num_stages, dtype=torch.int64))
            inputs, outputs = ["clip", "stage_mask"], ["logits"]
            axes = {"clip": {0: "B", 2: "T"}, "logits": {0: "B"}}
            file = "backbone_shared.onnx"
        else:
            args = (torch.zeros(1, 3, num_frames, crop, crop),)
            inputs, outputs = ["x"], ["y"]
            axes = {"x": {0: "B", 2: "T"}, "y": {0: "B"}}
            file = f"net_v{int(name.removeprefix('backbone_'), 2)}.onnx"
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        files[file] = buf.getvalue()
    return files


def _write_shared_graph(out: Path, data: bytes) -> None:
    """``backbone_shared.onnx`` with every initializer in ``backbone.weights`` (external data)."""
    import onnx

    model = onnx.load_from_string(data)
    onnx.save_model(model, str(out / "backbone_shared.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="backbone.weights", size_threshold=0)


def make_fake_bundle(out_dir: str | Path, *, stages: Sequence[str] = STAGES, classes: Sequence[str] = CLASSES,
                     num_frames: int = NUM_FRAMES, crop_size: int = CROP, policy_size: int = POLICY,
                     multi_label: bool = False, threshold: float = 0.5, selection=None,
                     head_bias: bool = True) -> Path:
    """Write a complete format-2 bundle (policy, one backbone graph + its weights file, one segment file per
    mask, manifest with real sha256) to ``out_dir``.

    ``selection``: a real ``SelectionNet`` (K stages, T frames) exported as ``policy.onnx`` and as the
    split ``policy_features.onnx`` / ``policy_heads.onnx`` (manifest ``policy_split``) in place of the
    fake policy; without it the bundle has no split, as bundles exported before it. ``head_bias``:
    record the heads' bias in the manifest (the runtime's numpy heads), as exports do now; False
    gives a bundle of the release before it (heads run as ``policy_heads.onnx``).
    """
    import warnings

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = _onnx_files(len(stages), len(classes), num_frames, crop_size, policy_size)
    for name, data in files.items():
        if name == "backbone_shared.onnx":
            _write_shared_graph(out, data)
        else:
            (out / name).write_bytes(data)
    split = None
    if selection is not None:
        from ada3d_edge.export.onnx_export import export_policy, export_policy_split, head_bias as bias_of, split_width

        export_policy(selection, out / "policy.onnx", num_frames, policy_size)
        export_policy_split(selection, out / "policy_features.onnx", out / "policy_heads.onnx", policy_size)
        split = PolicySplit.for_files(out, "policy_features.onnx", "policy_heads.onnx", split_width(selection),
                                      bias_of(selection) if head_bias else None)
    manifest = Manifest(
        arch="fake_tiny", stages=list(stages), num_frames=num_frames, stride=2, crop_size=crop_size,
        policy_size=policy_size, mean=list(MEAN), std=list(STD), classes=list(classes),
        multi_label=multi_label, threshold=threshold,
        policy=PolicyEntry.for_file(out, "policy.onnx", gflops_per_frame=0.01),
        backbone=BackboneEntry.for_files(
            out, "backbone_shared.onnx", "backbone.weights",
            configs=[ConfigEntry(m, gflops_per_frame=1.0 + m.count("1")) for m in all_masks(len(stages))],
            segments=[SegmentEntry("net", list(range(2 ** len(stages))),
                                   [SegmentVariantEntry.for_file(out, f"net_v{i}.onnx", degraded="0" in m)
                                    for i, m in enumerate(all_masks(len(stages)))])]),
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
