"""``ada3d export``: which ONNX Runtime layout runs the backbone, measured here (manifest ``ort_layout``).

The one ``If`` graph serves every configuration in about Upper's memory, but each ``If`` costs a
fixed time per call and its branches run without ORT's NCHWc rewrite where they read shared weights.
At the demo's scale (a few ms per clip) that fixed cost is a large share of a call. A flat graph per
configuration on the same weights file (``shared_graph.config_graphs``) has neither cost, but each
of its sessions keeps a private blocked copy of its 2D weights. Which wins depends on the model's
size, so the exporter measures both on the export machine:

1. memory: PSS of fresh processes (``runtime.bench.measure_memory``): every configuration loaded and
   run against Upper alone, per layout. ``configs`` must stay within ``MEMORY_BUDGET`` of the one
   graph's Upper alone (issue 13's target). An estimate first (the bytes of the 4-D conv weights the
   flat graphs hold, each a private copy) skips the probe where it cannot fit (full-size archs).
2. latency: every configuration at T' in {1, T/2, T}, batch 1, round-robin in one process
   (``fold_choice.time_graphs``); ``configs`` must be faster on average by ``FASTER_BY``.

The choice, the measurements and the reason go into the manifest (``layout_choice["ort_layout"]``).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from ..bundle import ORT_BACKBONE_LAYOUTS

MEMORY_BUDGET = 1.3  # all configurations in the flat graphs / Upper alone in the one graph (PSS)
FASTER_BY = 0.97  # mean time ratio flat / one graph below which the flat graphs are worth their memory
LAYOUT_CHOICES = ("measure", *ORT_BACKBONE_LAYOUTS)  # `ada3d export --ort-layout`


@dataclass
class LayoutChoice:
    """The ONNX Runtime layout the bundle records, and what it was chosen from."""

    layout: str
    reason: str
    estimate_mib: float = 0.0  # private copies the flat graphs would hold (4-D weights), estimated
    pss_mib: Dict[str, float] = field(default_factory=dict)  # "graph_upper", "configs_all"
    memory_ratio: Optional[float] = None  # configs_all / graph_upper
    speed_ratio: Optional[float] = None  # mean over (mask, T') of configs / graph
    ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)  # layout -> mask -> ms at `frames`
    frames: List[int] = field(default_factory=list)
    rounds: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {"method": "measured" if self.ms or self.pss_mib else "fixed", **asdict(self)}


def flat_private_mib(paths: Mapping[str, Path]) -> float:
    """MiB of 4-D float initializers over all flat graphs: the blocked copies ORT's NCHWc pass makes
    per session (each flat graph its own), what the ``configs`` layout adds to the shared file."""
    import onnx

    from .shared_graph import tensor_bytes

    total = 0
    for p in paths.values():
        model = onnx.load(str(p), load_external_data=False)
        total += sum(tensor_bytes(i) for i in model.graph.initializer if len(i.dims) == 4)
    return total / 2 ** 20


def _pss(bundle_dir: Path, layout: str, which: str, timeout: float) -> float:
    """PSS MiB of a fresh process that loaded ``bundle_dir``'s backbone in ``layout`` and ran Upper
    (``which="upper"``) or every configuration and the selection net (``"all"``)."""
    from ..runtime.bench import backend_factory, measure_memory

    factory = backend_factory("ort", "cpu", 1, layout=layout)
    mem = measure_memory(str(bundle_dir), factory, timeout=timeout, which_probes=(which,))[which]
    if mem.get("pss_mb") is None:
        raise RuntimeError(f"memory probe of the {layout} layout ({which}) failed: {mem}")
    return float(mem["pss_mb"])


def measure_layout(bundle_dir: Path, graph: Path, flat: Mapping[str, Path], num_stages: int, num_frames: int,
                   crop: int, threads: int = 1, budget_s: float = 30.0, progress: bool = False,
                   memory: Optional[Callable[[Path, str, str], float]] = None,
                   timeout: float = 900) -> LayoutChoice:
    """Choose ``graph`` or ``configs`` for a bundle written in ``bundle_dir`` (manifest included).

    ``memory(bundle_dir, layout, which)`` -> PSS MiB (default: a fresh process, ``_pss``); a test
    passes a fake.
    """
    from .fold_choice import time_graphs

    probe = memory or (lambda d, layout, which: _pss(d, layout, which, timeout))
    choice = LayoutChoice("graph", "", estimate_mib=round(flat_private_mib(flat), 3))
    try:
        upper = probe(bundle_dir, "graph", "upper")
    except RuntimeError as exc:  # e.g. a script without `if __name__ == "__main__":` cannot spawn the probe
        choice.reason = f"memory not measured ({exc}); the one graph kept"
        return choice
    choice.pss_mib = {"graph_upper": upper}
    room = (MEMORY_BUDGET - 1.0) * upper
    if choice.estimate_mib > room:
        choice.reason = (f"flat graphs would hold about {choice.estimate_mib:.0f} MiB of private 2D weights, "
                         f"more than the {room:.0f} MiB that {MEMORY_BUDGET}x Upper's memory leaves")
        return choice
    try:
        choice.pss_mib["configs_all"] = probe(bundle_dir, "configs", "all")
    except RuntimeError as exc:
        choice.reason = f"memory of the flat graphs not measured ({exc}); the one graph kept"
        return choice
    choice.memory_ratio = round(choice.pss_mib["configs_all"] / upper, 3)
    if choice.memory_ratio > MEMORY_BUDGET:
        choice.reason = f"flat graphs take {choice.memory_ratio:.2f}x Upper's memory (budget {MEMORY_BUDGET}x)"
        return choice
    ms, frames, rounds = time_graphs({"graph": graph, "configs": dict(flat)}, num_stages, num_frames, crop,
                                     threads, budget_s, progress=progress, desc="measure ORT layouts")
    choice.ms, choice.frames, choice.rounds = ms, list(frames), rounds
    choice.speed_ratio = round(statistics.fmean(
        f / g for m in ms["graph"] for f, g in zip(ms["configs"][m], ms["graph"][m])), 4)
    if choice.speed_ratio < FASTER_BY:
        choice.layout = "configs"
        choice.reason = (f"flat graphs ran at {choice.speed_ratio:.2f}x the one graph's time in "
                         f"{choice.memory_ratio:.2f}x Upper's memory")
    else:
        choice.reason = f"flat graphs ran at {choice.speed_ratio:.2f}x the one graph's time: not worth their memory"
    return choice
