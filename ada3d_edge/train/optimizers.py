"""One optimiser over parameter groups that follow different update rules.

The Upper stage fine-tunes the backbone with SGD, as the paper does, and can pretrain the selection
network's MobileNetV2 with AdamW (`optim.selection_optimizer`): trained from scratch on 32 px
frames, in few steps, AdamW gets further than SGD (train/README.md). `MixedOptimizer` steps both
and looks like one optimiser to the LR scheduler, the trainer and the checkpoints.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

__all__ = ["MixedOptimizer"]


class MixedOptimizer(torch.optim.Optimizer):
    """Steps several optimisers as one. Their parameter groups are shared (the same dicts), so an
    LR scheduler built on this optimiser sets every group's learning rate."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        if not optimizers:
            raise ValueError("MixedOptimizer needs at least one optimiser")
        self.optimizers: List[torch.optim.Optimizer] = list(optimizers)
        # the base class adopts the group dicts themselves (no copies), so both views stay in sync
        super().__init__([g for o in self.optimizers for g in o.param_groups], defaults={})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:  # type: ignore[override]
        return {"mixed": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:  # type: ignore[override]
        parts = state_dict.get("mixed") if isinstance(state_dict, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.optimizers):
            raise ValueError("optimiser state does not match this recipe's optimisers "
                             "(was the checkpoint written with another optim.selection_optimizer?)")
        for opt, part in zip(self.optimizers, parts):
            opt.load_state_dict(part)
        # torch's load_state_dict gives each optimiser new group dicts: share them again
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
