"""The cost term O(x) of the reward (Eq. 4), one per head: usage (the paper's), FLOPs or measured latency.

``policy.cost`` picks it (COST_SPECS):

* ``usage`` (default, the paper): ``O(u) = |u| / T``, ``O(v) = (|v| / K) ** 2``.
* ``flops`` / ``latency``: a joint table ``c(v, T')`` normalised to Upper (``c(all 3D, T) = 1``): the
  backbone's analytic MACs (`ada3d_edge.flops`), or the latency measured by ``ada3d bench --lut``
  (`ada3d_edge.latency_lut`). The table prices a whole configuration, while each head gets its own
  reward, so it is split into two factors whose product is the joint cost::

      O(u) = c(Upper, |u|)                      what the kept frames cost on the all-3D model
      O(v) = c(v, |u|) / c(Upper, |u|)          what the stage choice costs at those frames
      O(u) * O(v) = c(v, |u|)

  The frame head is priced by frames alone (like |u|/T; exactly |u|/T when cost is linear in T'),
  the stage head by its own choice at the frame count it actually ran with, so a configuration that
  is slower than Upper at small T' (O(v) > 1) is charged to the head that chose it. train/README.md
  ("Latency-aware reward") gives the reasons and the experiment.
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
    """Head costs from a joint table ``cost[(mask, T')]`` with Upper at T = 1 (see the module docstring)."""

    def __init__(self, cost: Dict[Tuple[str, int], float], num_frames: int, num_stages: int, name: str = "table"):
        self.t, self.k, self.name = int(num_frames), int(num_stages), name
        masks = all_masks(self.k)  # index = int(mask, 2)
        grid = [[0.0] + [float(cost[(m, f)]) for f in range(1, self.t + 1)] for m in masks]
        self.grid = torch.tensor(grid, dtype=torch.float64)  # (2^K, T + 1)
        self.upper = int(upper_mask(self.k), 2) if self.k else 0
        self.weights = torch.tensor([2 ** (self.k - 1 - i) for i in range(self.k)], dtype=torch.long)

    def joint(self, frames: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
        """c(v, |u|) per clip, (B,)."""
        n = frames.long().sum(1).cpu()
        idx = (stages.long().cpu() * self.weights).sum(1) if self.k else torch.zeros_like(n)
        return self.grid[idx, n].float().to(frames.device)

    def __call__(self, frames: torch.Tensor, stages: torch.Tensor) -> HeadCosts:
        n = frames.long().sum(1).cpu()
        upper = self.grid[self.upper, n].float().to(frames.device)
        return upper, self.joint(frames, stages) / upper


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
    from ..latency_lut import load_checked_lut

    lut = load_checked_lut(lut_path, arch, spec.num_frames, spec.num_stages_3d, crop)
    return TableCost(lut.cost, spec.num_frames, spec.num_stages_3d, "latency")


COST_SPECS: Dict[str, CostSpec] = {s.name: s for s in (
    CostSpec("usage", "the paper's O(u) = |u|/T, O(v) = (|v|/K)^2", False, lambda arch, spec, crop, lut: usage_costs),
    CostSpec("flops", "backbone MACs per (mask, T') from ada3d_edge.flops, split into frame and stage factors",
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
