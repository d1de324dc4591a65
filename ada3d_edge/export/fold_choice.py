"""``ada3d export --fold measure``: each configuration runs the 2D layout that is fastest here.

A degraded stage (and the 2D tail of a configuration) can run as Conv2d over frames folded into the
batch, or as Conv3d(1, k, k) on the centre tap: the same function, other speed. Which is faster
depends on the scale and the runtime: at the demo's scale inside the shared graph's ``If`` branches,
folding cost 1.2-2.2x of Upper at T'=1 (the Transpose/Reshape round trips cost more than they save)
while Conv3d(1, k, k) kept every configuration at or under Upper (benchmarks/results/fold_choice_*.md).
So the exporter builds the one-graph backbone once per candidate fold mode, times every configuration
at T' in {1, T/2, T} round-robin on this machine (batch 1, ONNX Runtime CPU with the bundle's session
settings), and gives each configuration the mode with the lower mean ratio. The modes' variants all
read the same weights (``shared_graph``), so the mix costs no memory; the choice and the timings go
into the manifest (``layout_choice``).
"""
from __future__ import annotations

import platform
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..masks import all_masks
from .verify import env_threads, frame_counts, ort_session

MEASURE = "measure"  # the ``--fold`` value that asks for this
CANDIDATES = ("auto", "none")  # today's rule (fold the 2D tail and degraded stages) and nothing folded
MIN_ROUNDS = 2
MAX_ROUNDS = 15
BUDGET_S = 30.0


@dataclass
class FoldChoice:
    """The fold mode of every stage mask and the measurement it came from (a manifest entry)."""

    modes: Dict[str, str]
    frames: List[int]
    ms: Dict[str, Dict[str, List[float]]]  # candidate mode -> mask -> median ms at each of `frames`
    rounds: int
    threads: int = 1
    timer: str = "thread CPU time"
    machine: str = field(default_factory=lambda: f"{platform.machine()} {platform.processor() or ''}".strip())
    onnxruntime: str = ""

    def to_dict(self) -> Dict[str, object]:
        return {"method": "measured", **asdict(self)}


def choose_modes(ms: Mapping[str, Mapping[str, Sequence[float]]], prefer: str = CANDIDATES[0]) -> Dict[str, str]:
    """Per mask, the mode with the lowest mean over T' of its time / ``prefer``'s time (ties: ``prefer``)."""
    masks = list(ms[prefer])
    out = {}
    for mask in masks:
        ref = ms[prefer][mask]
        score = {mode: statistics.fmean(t / r for t, r in zip(times[mask], ref)) for mode, times in ms.items()}
        best = min(score, key=lambda m: (score[m], m != prefer))
        out[mask] = best if score[best] < score[prefer] else prefer
    return out


def _clock(threads: int, timer: Optional[Callable[[], float]]) -> tuple:
    """(clock, its name): the calling thread's CPU time with one intra-op thread (ORT then runs every
    op on it, so waiting for a core under load is not counted), else wall clock."""
    if timer is not None:
        return timer, "wall clock"
    return (time.thread_time, "thread CPU time") if threads == 1 else (time.perf_counter, "wall clock")


def time_graphs(graphs: Mapping[str, Union[Path, Mapping[str, Path]]], num_stages: int, num_frames: int,
                crop: int, threads: int = 1, budget_s: float = BUDGET_S, min_rounds: int = MIN_ROUNDS,
                max_rounds: int = MAX_ROUNDS, timer: Optional[Callable[[], float]] = None, seed: int = 0,
                progress: bool = False, desc: str = "measure 2D layouts"):
    """Median ms of every (graph, mask, T') at batch 1, shuffled round-robin after one warm-up round;
    rounds continue until ``budget_s`` of wall time or ``max_rounds``. Returns (ms, frames, rounds).
    A graph is one file serving every mask (``stage_mask`` fed) or a file per mask (flat graphs).
    ``progress``: a tqdm bar over the rounds (full-size archs take minutes)."""
    from tqdm import tqdm

    from .shared_graph import MASK_INPUT, mask_array

    clock = _clock(threads, timer)[0]
    frames = frame_counts(num_frames)
    rng = np.random.default_rng(seed)
    clips = {t: rng.standard_normal((1, 3, t, crop, crop)).astype(np.float32) for t in frames}
    masks = all_masks(num_stages)
    opened: Dict[Path, object] = {}  # the bundle's ort_session settings (ORT_ENABLE_ALL, memory pattern off)
    sessions = {}
    for mode, p in graphs.items():
        for m in masks:
            path = Path(p[m] if isinstance(p, Mapping) else p)
            if path not in opened:
                opened[path] = ort_session(path, enable_mem_pattern=False, threads=threads)
            sessions[(mode, m)] = opened[path]
    takes_mask = {key: MASK_INPUT in {i.name for i in s.get_inputs()} for key, s in sessions.items()}
    jobs = [(mode, m, t) for mode in graphs for m in masks for t in frames]
    samples: Dict[tuple, List[float]] = {j: [] for j in jobs}
    order = random.Random(seed)
    start, rounds = time.perf_counter(), 0
    bar = tqdm(total=min_rounds + 1, desc=desc, unit="round", disable=not progress, leave=False)
    for r in range(max_rounds + 1):
        order.shuffle(jobs)
        for mode, m, t in jobs:
            feeds = {"clip": clips[t], MASK_INPUT: mask_array(m)} if takes_mask[(mode, m)] else {"clip": clips[t]}
            t0 = clock()
            sessions[(mode, m)].run(None, feeds)
            if r:  # round 0 warms every (mode, mask, T')
                samples[(mode, m, t)].append((clock() - t0) * 1e3)
        rounds = r
        if bar.n >= bar.total:
            bar.total += 1  # rounds past the minimum run while the budget lasts
        bar.update(1)
        if r >= min_rounds and time.perf_counter() - start > budget_s:
            break
    bar.close()
    ms = {mode: {m: [statistics.median(samples[(mode, m, t)]) for t in frames] for m in masks} for mode in graphs}
    return ms, frames, rounds


def measure_fold_choice(backbone, crop: int, opset: int, num_frames: int, candidates: Sequence[str] = CANDIDATES,
                        threads: int = 1, budget_s: float = BUDGET_S, timer: Optional[Callable[[], float]] = None,
                        progress: bool = False, local_budget: float | None = None) -> FoldChoice:
    """Build the shared backbone graph in each candidate mode in a temporary folder, time them here,
    and choose a mode per configuration (``choose_modes``). ``local_budget``: as the export builds
    the graph (``shared_graph.build_shared_backbone``; None = its default)."""
    import onnxruntime as ort

    from .shared_graph import build_shared_backbone, save_shared

    with tempfile.TemporaryDirectory(prefix="ada3d-fold-") as tmp:
        graphs = {}
        for mode in candidates:
            graph, _ = build_shared_backbone(backbone, crop, opset, mode, num_frames=num_frames,
                                             local_budget=local_budget)
            graphs[mode] = save_shared(graph, Path(tmp) / f"backbone_{mode}.onnx")[0]
            del graph
        ms, frames, rounds = time_graphs(graphs, backbone.num_stages_3d, num_frames, crop, threads, budget_s,
                                         timer=timer, progress=progress)
    return FoldChoice(choose_modes(ms, prefer=candidates[0]), frames, ms, rounds, threads,
                      _clock(threads, timer)[1], onnxruntime=ort.__version__)


def threads_from_env() -> int:
    """The runtime's default (``ada3d run --threads 1``) unless OMP_NUM_THREADS says otherwise."""
    return env_threads() or 1


def resolve_folds(backbone, crop: int, opset: int, num_frames: int, fold_frames: str,
                  budget_s: float = BUDGET_S, progress: bool = False, local_budget: float | None = None) -> tuple:
    """``(folds, layout_choice)`` for an export: ``fold_frames`` itself and ``{"method": "fixed"}``, or
    for ``"measure"`` the per-mask modes timed here and the measurement (the manifest's entry)."""
    if fold_frames != MEASURE:
        return fold_frames, {"method": "fixed", "mode": fold_frames}
    choice = measure_fold_choice(backbone, crop, opset, num_frames, threads=threads_from_env(),
                                 budget_s=budget_s, progress=progress, local_budget=local_budget)
    return choice.modes, choice.to_dict()
