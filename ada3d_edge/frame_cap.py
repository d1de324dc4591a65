"""Frame cap: an adaptive clip never costs more than Upper (``ada3d run/bench --cap R``).

The greedy policy may keep every frame with every stage 3D; that clip then pays Upper's backbone
*and* the selection network, so the slowest adaptive clips are slower than Upper (the demo's p95
was 1.08x Upper's). With a cap ``R``, each configuration keeps at most ``max_frames[mask]`` frames:
the largest T' whose GFLOPs, selection network included, stay within ``R`` x Upper's. The frames
dropped are the kept ones the frame head was least sure of (lowest probability, later frame first
on ties). A pure function of the manifest's costs, the same in every backend; numpy only (the
runtime uses it). The accuracy it costs is measured by ``ada3d bench`` (end to end, with and
without); README "Measured results".
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def max_frames_table(masks: Sequence[str], num_frames: int, gflops: Callable[[str, int], float],
                     policy_gflops: float, upper_gflops: float, cap: float = 1.0) -> dict[str, int]:
    """Per mask, the largest T' in 1..T with ``gflops(mask, T') + policy_gflops <= cap * upper_gflops``
    (at least 1: a clip keeps a frame whatever the cap)."""
    if not cap > 0:
        raise ValueError(f"the frame cap must be > 0 (a multiple of Upper's GFLOPs), got {cap}")
    budget = cap * upper_gflops - policy_gflops
    out = {}
    for mask in masks:
        fits = [t for t in range(1, int(num_frames) + 1) if gflops(mask, t) <= budget + 1e-12]
        out[mask] = max(fits) if fits else 1
    return out


def apply_frame_cap(keep: np.ndarray, frame_probs: np.ndarray, masks: Sequence[str],
                    max_frames: Mapping[str, int]) -> np.ndarray:
    """``keep`` (B, T) bool with, in each clip, only the ``max_frames[masks[i]]`` most probable kept
    frames left (ties: the earlier frame stays). Returns a new array; ``keep`` is not changed."""
    out = np.array(keep, dtype=bool, copy=True)
    probs = np.asarray(frame_probs, dtype=np.float64).reshape(out.shape)
    for i, mask in enumerate(masks):
        kept = np.flatnonzero(out[i])
        extra = len(kept) - int(max_frames[mask])
        if extra > 0:
            order = sorted(kept, key=lambda j: (probs[i, j], -j))  # least probable first, later first on ties
            out[i, order[:extra]] = False
    return out
