"""Latency percentiles: the one summary of a list of timings (the bench's rows, the run's summary)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """mean / p50 / p95 / min in ms over ``n`` samples."""

    mean: float
    p50: float
    p95: float
    min: float
    n: int

    def to_json(self, digits: int | None = None) -> dict[str, float | int]:
        """The fields as a dict; values rounded to ``digits`` when given."""
        out = asdict(self)
        if digits is not None:
            out.update({k: round(v, digits) for k, v in out.items() if k != "n"})
        return out


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats | None:
    """The summary of ``samples_ms``; None when there is no sample."""
    if len(samples_ms) == 0:
        return None
    a = np.asarray(samples_ms, dtype=np.float64)
    return LatencyStats(mean=float(a.mean()), p50=float(np.percentile(a, 50)), p95=float(np.percentile(a, 95)),
                        min=float(a.min()), n=int(a.size))
