"""The heads of the split selection network: a bias and sigmoids, in numpy where the bundle allows.

Since the heads were folded into each frame's T + K terms (``SelectionNet.head_terms``), what is left
of them is ``sigmoid(mean_terms + c)``. A bundle that records ``c`` (``PolicySplit.head_bias``) has
them computed here, which saves an engine call a clip (the call costs more than the arithmetic; on a
cold cache after a backbone call several times more, benchmarks/results/cache_probe_cpu.md). Older
bundles run ``policy_heads.onnx``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..bundle import POLICY_FEATURES, POLICY_HEADS_NAME, PolicySplit
from .backends.base import Backend


def numpy_heads(clip_terms: np.ndarray, head_bias: Sequence[float] | np.ndarray,
                num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(B, T+K)`` mean frame terms -> ``(frame_probs (B, T), stage_probs (B, K))`` float32."""
    z = np.asarray(clip_terms, np.float32) + np.asarray(head_bias, np.float32)
    probs = 1.0 / (1.0 + np.exp(-z))
    return probs[:, :num_frames], probs[:, num_frames:]


class SplitHeads:
    """Runs the heads of one bundle's split selection network, numpy or engine."""

    def __init__(self, split: PolicySplit, num_frames: int) -> None:
        self.num_frames = int(num_frames)
        self.bias = None if split.head_bias is None else np.asarray(split.head_bias, np.float32)

    @property
    def in_numpy(self) -> bool:
        """Whether the heads run in numpy (the bundle records their bias), not as an engine."""
        return self.bias is not None

    def __call__(self, backend: Backend, clip_terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.bias is not None:
            return numpy_heads(clip_terms, self.bias, self.num_frames)
        out = backend.run(POLICY_HEADS_NAME, {POLICY_FEATURES: clip_terms})
        return out["frame_probs"], out["stage_probs"]
