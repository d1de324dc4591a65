"""A format-2 bundle whose backbone is a real tiny arch in segments (``<segment>_v<i>.onnx`` against
one ``backbone.weights``), for the TensorRT build and chain tests (needs torch + onnx).

Import from tests as ``from segment_bundle import make_segment_bundle`` (pytest puts tests/ on sys.path).
The policy, stages and classes are the fake bundle's (``fake_bundle.py``); the backbone is
``slow_tiny`` (stages res4, res5) with BN statistics that are not the identity.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from fake_bundle import CLASSES, make_fake_bundle

ARCH, CROP, FRAMES = "slow_tiny", 16, 8


def tiny_backbone():
    import torch

    from ada3d_edge.models import build_backbone

    torch.manual_seed(0)
    b = build_backbone(ARCH, num_classes=len(CLASSES), crop_size=CROP).eval()
    with torch.no_grad():
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return b


def make_segment_bundle(out_dir: str | Path, fold: str = "auto", **fake_bundle_options):
    """Write the bundle (``fake_bundle_options``: for ``make_fake_bundle``, e.g. ``selection``); returns
    (its directory, the PyTorch backbone it was exported from)."""
    from ada3d_edge.bundle import (BackboneEntry, SegmentEntry, SegmentVariantEntry, read_manifest,
                                   write_manifest)
    from ada3d_edge.export.shared_graph import build_shared_backbone, save_backbone_files

    out = make_fake_bundle(out_dir, num_frames=FRAMES, crop_size=CROP, **fake_bundle_options)
    b = tiny_backbone()
    model, segments = build_shared_backbone(b, CROP, 17, fold, num_frames=FRAMES)
    for p in out.glob("net_v*.onnx"):
        p.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        info = save_backbone_files(model, segments, tmp)
        for p in Path(tmp).iterdir():
            shutil.move(str(p), out / p.name)
    m = read_manifest(out)
    m.backbone = BackboneEntry.for_files(
        out, info["graph"], info["weights"], configs=m.backbone.configs,
        segments=[SegmentEntry(s["name"], s["choice"], [SegmentVariantEntry.for_file(out, f, d, i) for f, d, i in
                                                        zip(s["files"], s["degraded"], s["inputs"])])
                  for s in info["segments"]])
    write_manifest(out, m)
    return out, b


def reference_logits(backbone, mask: str, clip: np.ndarray) -> np.ndarray:
    """The PyTorch forward of ``backbone`` under ``mask``."""
    import torch

    with torch.no_grad():
        return backbone(torch.from_numpy(clip), mask).numpy()
