"""Per-stream cache of the selection network's frame features (the split policy of the bundle).

The selection network averages per-frame features over the T frames of a window, so on a stream
with hop H a window shares T - H frames with the previous one. The scheduler keeps one
``FeatureCache`` per source, keyed by the id the source's ring buffer gave each sampled frame
(``Window.frame_ids``), and the predictor computes features only for frames not in it.

Ids never repeat within a reader; ``generation`` changes when the reader's ring buffer is reset (a
reconnect), which empties the cache, so a window after a gap never meets stale features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class FeatureCache:
    """Frame features ``(F,) float32`` of one source, by sampled-frame id."""

    def __init__(self) -> None:
        self._features: dict[int, np.ndarray] = {}
        self.generation: int | None = None
        self.computed = 0  # frames whose features were computed
        self.reused = 0  # frames whose features came from the cache

    def sync(self, generation: int) -> None:
        """Empty the cache when the source's buffer generation changed (after a reconnect)."""
        if generation != self.generation:
            self._features.clear()
            self.generation = generation

    def get(self, frame_id: int) -> np.ndarray | None:
        """The features of frame ``frame_id``, or None when not cached."""
        return self._features.get(frame_id)

    def put(self, frame_id: int, features: np.ndarray) -> None:
        """Remember the features of frame ``frame_id``."""
        self._features[frame_id] = features

    def forget_before(self, first_id: int) -> None:
        """Drop frames older than ``first_id`` (no later window of the source holds them)."""
        for key in [k for k in self._features if k < first_id]:
            del self._features[key]

    def __len__(self) -> int:
        return len(self._features)


@dataclass(frozen=True)
class StreamFrames:
    """A window's place in its stream: the source's cache and the id of each of its T frames."""

    cache: FeatureCache
    ids: Sequence[int]
