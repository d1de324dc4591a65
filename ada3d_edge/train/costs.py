"""The cost term O(x) of the reward (Eq. 4), one per head: usage (the paper's), FLOPs or measured latency.

``policy.cost`` picks it (COST_SPECS):

* ``usage`` (default, the paper): ``O(u) = |u| / T``, ``O(v) = (|v| / K) ** 2``.
* ``flops`` / ``latency``: a joint table ``c(v, T')`` normalised to Upper (``c(all 3D, T) = 1``): the
  backbone's analytic MACs (`ada3d_edge.flops`), or the latency measured by ``ada3d bench --lut``
  (`ada3d_edge.latency_lut`). The table prices a whole configuration, and both heads get it::

      O(u) = O(v) = c(v, |u|)

  so each head's reward is ``1 - c(v, |u|)`` when correct (``-gamma`` otherwise), on the paper's
  per-head scale (Upper costs 1). With one reward for both heads, REINFORCE follows the gradient of
  the one objective that matters, accuracy against the measured time of the configuration that ran;
  splitting the table into per-head factors (tried: ``O(u) = c(Upper, |u|)``,
  ``O(v) = c(v, |u|) / c(Upper, |u|)``, and ``O(u) = c(v, |u|) / c(v, T)``, ``O(v) = c(v, T)``)
  optimises a surrogate and ended at slower configurations in `benchmarks/reward_split_bandit.py`.
  train/README.md ("Latency-aware reward") gives the experiments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ..masks import all_masks, upper_mask

HeadCosts = Tuple[torch.Tensor, torch.Tensor]  # (O_u, O_v), each (B,)


def frame_cost(frames: torch.Tensor) -> torch.Tensor:
    """O(u) = |u| / T for (B, T) frame actions."""
    return frames.float().sum(1) / frames.shape[1]


def stage_cost(stages: torch.Tensor) -> torch.Tensor:
    """O(v) = (|v| / K)^2 for (B, K) stage actions (0 when K = 0)."""
    k = stages.shape[1]
    if k == 0:
        return stages.new_zeros(stages.shape[0], dtype=torch.float)
    return (stages.float().sum(1) / k) ** 2


def usage_costs(frames: torch.Tensor, stages: torch.Tensor) -> HeadCosts:
    """The paper's O(u), O(v)."""
    return frame_cost(frames), stage_cost(stages)


class TableCost:
    """Head costs from a joint table ``cost[(mask, T')]`` with Upper at T = 1: both heads get ``c(v, |u|)``."""

    def __init__(self, cost: Dict[Tuple[str, int], float], num_frames: int, num_stages: int, name: str = "table"):
        self.t, self.k, self.name = int(num_frames), int(num_stages), name
        masks = all_masks(self.k)  # index = int(mask, 2)
        grid = [[0.0] + [float(cost[(m, f)]) for f in range(1, self.t + 1)] for m in masks]
        self.grid = torch.tensor(grid, dtype=torch.float64)  # (2^K, T + 1); T' = 0 never occurs
        self.weights = torch.tensor([2 ** (self.k - 1 - i) for i in range(self.k)], dtype=torch.long)

    def joint(self, frames: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
        """c(v, |u|) per clip, (B,)."""
        n = frames.long().sum(1).cpu()
        idx = (stages.long().cpu() * self.weights).sum(1) if self.k else torch.zeros_like(n)
        return self.grid[idx, n].float().to(frames.device)

    def __call__(self, frames: torch.Tensor, stages: torch.Tensor) -> HeadCosts:
        c = self.joint(frames, stages)
        return c, c


CostFn = Callable[[torch.Tensor, torch.Tensor], HeadCosts]


@dataclass(frozen=True)
class CostSpec:
    """One ``policy.cost`` mode: what it means and how its head costs are built."""

    name: str
    summary: str
    needs_lut: bool
    build: Callable[..., CostFn]


def _flops_cost(arch: str, spec, crop: int, lut_path: Optional[str]) -> CostFn:
    from ..flops import backbone_macs

    t, k = spec.num_frames, spec.num_stages_3d
    ref = backbone_macs(spec, upper_mask(k), t, crop)
    table = {(m, f): backbone_macs(spec, m, f, crop) / ref for m in all_masks(k) for f in range(1, t + 1)}
    return TableCost(table, t, k, "flops")


def _latency_cost(arch: str, spec, crop: int, lut_path: Optional[str]) -> CostFn:
    from ..flops import backbone_macs
    from ..latency_lut import load_checked_lut

    upper = backbone_macs(spec, upper_mask(spec.num_stages_3d), spec.num_frames, crop) / 1e9
    lut = load_checked_lut(lut_path, arch, spec.num_frames, spec.num_stages_3d, crop, upper)
    return TableCost(lut.cost, spec.num_frames, spec.num_stages_3d, "latency")


COST_SPECS: Dict[str, CostSpec] = {s.name: s for s in (
    CostSpec("usage", "the paper's O(u) = |u|/T, O(v) = (|v|/K)^2", False, lambda arch, spec, crop, lut: usage_costs),
    CostSpec("flops", "backbone MACs per (mask, T') from ada3d_edge.flops, normalised to Upper",
             False, _flops_cost),
    CostSpec("latency", "measured latency per (mask, T') from policy.cost_lut (ada3d bench --lut)", True,
             _latency_cost),
)}


def make_cost(mode: str, arch: str, spec, crop: int, lut_path: Optional[str] = None) -> CostFn:
    """The head-cost function of ``policy.cost`` for model ``arch`` built as backbone ``spec``
    (a models.specs.BackboneSpec) and evaluated at ``crop``; a latency table must match all three."""
    if mode not in COST_SPECS:
        raise ValueError(f"policy.cost={mode!r} is not one of {list(COST_SPECS)}")
    if COST_SPECS[mode].needs_lut and not lut_path:
        raise ValueError(f"policy.cost={mode} needs policy.cost_lut: FILE (write it with `ada3d bench BUNDLE --lut FILE`)")
    return COST_SPECS[mode].build(arch, spec, int(crop), lut_path)


def check_recipe_cost(recipe) -> None:
    """Before any work: a ``policy.cost: latency`` table must exist and fit the recipe's arch, T and crop."""
    if not COST_SPECS[recipe.policy.cost].needs_lut:
        return
    from ..latency_lut import load_checked_lut
    from ..models.specs import get_spec

    k = get_spec(recipe.model.arch).num_stages_3d
    load_checked_lut(recipe.policy.cost_lut, recipe.model.arch, recipe.data.num_frames, k, recipe.data.test_crop)
