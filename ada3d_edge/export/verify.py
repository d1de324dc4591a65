"""Check exported ONNX files against PyTorch (the unfolded model, eval mode) in ONNX Runtime.

Each backbone configuration runs at T' in {1, middle, T} and batch sizes {1, 2}; the largest
absolute difference of the logits must be <= ``rtol * max(1, max|logits|)``. A failure raises
``VerificationError`` naming the configuration, T', batch and the difference.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from ..bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_OUTPUT, POLICY_FEATURES, POLICY_INPUT,
                      POLICY_OUTPUTS)
from ..models.backbone import Backbone
from ..models.selection import SelectionNet
from ..runtime.split_heads import numpy_heads

RTOL = 1e-4
BATCH_SIZES = (1, 2)
PathLike = Union[str, Path]


class VerificationError(RuntimeError):
    """An exported graph disagrees with PyTorch."""


def frame_counts(num_frames: int) -> List[int]:
    """T' values to check: 1, the middle, T (deduplicated, ascending)."""
    t = int(num_frames)
    return sorted({1, (t + 1) // 2, t})


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive int, or None when it is unset or not one."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else None


def ort_session(path: PathLike, enable_mem_pattern: bool = True, threads: int | None = None):
    """A CPU InferenceSession with ``threads`` intra-op threads (None: ``OMP_NUM_THREADS`` if set,
    else ONNX Runtime's default); one inter-op thread when ``threads`` is given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_mem_pattern = bool(enable_mem_pattern)
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    elif env_threads():
        options.intra_op_num_threads = env_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(name: str, where: str, got: np.ndarray, ref: np.ndarray, rtol: float) -> float:
    if got.shape != ref.shape:
        raise VerificationError(f"{name}: {where}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
    diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
    bound = rtol * max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    if not np.isfinite(diff) or diff > bound:
        raise VerificationError(f"{name}: {where}: max |ONNX - PyTorch| = {diff:.3g} exceeds {bound:.3g} "
                                f"({rtol:g} x max(1, max|logits|)); the export is wrong, not saved")
    return diff


def verify_backbone(path: PathLike, backbone: Backbone, mask: str, num_frames: int, crop: int,
                    batch_sizes: Sequence[int] = BATCH_SIZES, rtol: float = RTOL, seed: int = 0) -> float:
    """Compare ``backbone_<mask>.onnx`` with ``backbone(clip, mask)``; returns the largest difference."""
    session = ort_session(path)
    gen = torch.Generator().manual_seed(seed)
    backbone.eval()
    worst = 0.0
    for t in frame_counts(num_frames):
        for b in batch_sizes:
            clip = torch.randn(b, 3, t, crop, crop, generator=gen)
            with torch.no_grad():
                ref = backbone(clip, mask).double().numpy()
            got = session.run([BACKBONE_OUTPUT], {BACKBONE_INPUT: clip.numpy()})[0]
            worst = max(worst, _check(f"configuration {mask} ({Path(path).name})", f"T'={t}, batch={b}",
                                      got, ref, rtol))
    return worst


def verify_shared_backbone(path: PathLike | Mapping[str, PathLike], backbone: Backbone, masks: Sequence[str],
                           num_frames: int, crop: int, batch_sizes: Sequence[int] = BATCH_SIZES, rtol: float = RTOL,
                           seed: int = 0, progress=None) -> float:
    """Compare the one backbone graph, fed each mask as ``stage_mask`` on ONE session (or, given a
    mapping mask -> file, each configuration's flat graph), with ``backbone(clip, mask)`` at every T'
    of ``frame_counts`` and every batch size; returns the worst difference. ``progress``: optional
    callable run after each configuration."""
    flat = isinstance(path, Mapping)
    session = None if flat else ort_session(path, enable_mem_pattern=False)
    gen = torch.Generator().manual_seed(seed)
    backbone.eval()
    worst = 0.0
    for mask in masks:
        where = Path(path[mask] if flat else path)
        if flat:
            session = ort_session(where, enable_mem_pattern=False)
        takes_mask = BACKBONE_MASK_INPUT in {i.name for i in session.get_inputs()}
        feed_mask = np.asarray([int(c) for c in mask], np.int64)
        for t in frame_counts(num_frames):
            for b in batch_sizes:
                clip = torch.randn(b, 3, t, crop, crop, generator=gen)
                with torch.no_grad():
                    ref = backbone(clip, mask).double().numpy()
                feeds = {BACKBONE_INPUT: clip.numpy(), **({BACKBONE_MASK_INPUT: feed_mask} if takes_mask else {})}
                got = session.run([BACKBONE_OUTPUT], feeds)[0]
                worst = max(worst, _check(f"configuration {mask} ({where.name})", f"T'={t}, batch={b}",
                                          got, ref, rtol))
        if progress is not None:
            progress()
    return worst


def verify_policy(path: PathLike, selection: SelectionNet, num_frames: int, policy_size: int,
                  batch_sizes: Sequence[int] = BATCH_SIZES, rtol: float = RTOL, seed: int = 0) -> float:
    """Compare ``policy.onnx`` with the selection network; returns the largest difference."""
    session = ort_session(path)
    gen = torch.Generator().manual_seed(seed)
    selection.eval()
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, num_frames, policy_size, policy_size, generator=gen)
        with torch.no_grad():
            refs: Tuple[torch.Tensor, ...] = selection(x)
        outs = session.run(list(POLICY_OUTPUTS), {POLICY_INPUT: x.numpy()})
        for name, got, ref in zip(POLICY_OUTPUTS, outs, refs):
            worst = max(worst, _check(f"policy ({Path(path).name})", f"{name}, batch={b}", got,
                                      ref.double().numpy(), rtol))
    return worst


def verify_policy_split(features_path: PathLike, heads_path: PathLike, selection: SelectionNet, num_frames: int,
                        policy_size: int, batch_sizes: Sequence[int] = BATCH_SIZES, rtol: float = RTOL,
                        seed: int = 0, head_bias: Sequence[float] | None = None) -> float:
    """Compare the split selection network with PyTorch; returns the largest difference.

    Checks ``policy_features.onnx`` against each frame's head terms in PyTorch
    (``image_features @ head_terms()[0]``), and the runtime's composition (terms per frame, mean over
    the T frames in numpy, ``policy_heads.onnx``) against the unsplit ``selection(frames)``, at each
    batch size; with ``head_bias``, also the runtime's numpy heads (``runtime.split_heads``).
    """
    features, heads = ort_session(features_path), ort_session(heads_path)
    names = f"policy split ({Path(features_path).name}, {Path(heads_path).name})"
    gen = torch.Generator().manual_seed(seed)
    selection.eval()
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, num_frames, policy_size, policy_size, generator=gen)
        images = x.transpose(1, 2).reshape(b * num_frames, 3, policy_size, policy_size)
        with torch.no_grad():
            ref_feat = (selection.image_features(images) @ selection.head_terms()[0]).double().numpy()
            refs: Tuple[torch.Tensor, ...] = selection(x)
        feat = features.run([POLICY_FEATURES], {POLICY_INPUT: images.numpy()})[0]
        worst = max(worst, _check(names, f"features, batch={b}", feat, ref_feat, rtol))
        clip_feat = feat.reshape(b, num_frames, -1).mean(axis=1, dtype=np.float32)
        outs = heads.run(list(POLICY_OUTPUTS), {POLICY_FEATURES: clip_feat})
        for name, got, ref in zip(POLICY_OUTPUTS, outs, refs):
            worst = max(worst, _check(names, f"{name}, batch={b}", got, ref.double().numpy(), rtol))
        if head_bias is not None:
            for name, got, ref in zip(POLICY_OUTPUTS, numpy_heads(clip_feat, head_bias, num_frames), refs):
                worst = max(worst, _check(names, f"{name} (numpy heads), batch={b}", got, ref.double().numpy(), rtol))
    return worst
