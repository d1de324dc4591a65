"""Rewards (Eq. 4), REINFORCE with a baseline, correctness, and random policies.

`R(x) = 1 - O(x)` when the prediction is correct, else `-gamma`, one reward per head:
`O(u) = |u| / T` (frames), `O(v) = (|v| / K) ** 2` (3D stages); `policy.cost` can take them from a
FLOPs or measured-latency table instead (costs.py). The policy loss is
`-(R_u - b_u) * log pi(u) - (R_v - b_v) * log pi(v)`, averaged over the batch.

Multi-label data (mAP datasets): a clip's prediction counts as correct when its top-1 class is one
of the clip's labels.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch

from ..models.selection import Actions, ensure_one_frame
from .config import BASELINES
from .costs import CostFn, frame_cost, stage_cost, usage_costs  # noqa: F401  (frame_cost, stage_cost: re-exported)


def is_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) logits, labels (B,) int or (B, C) multi-hot -> (B,) bool: top-1 is (among) the label(s)."""
    top = logits.argmax(1)
    if labels.dim() == 2:
        return labels.gather(1, top[:, None]).squeeze(1) > 0.5
    return top == labels


def rewards(correct: torch.Tensor, actions: Actions, gamma: float,
            cost: CostFn = usage_costs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 for both heads: returns (R_u, R_v), each (B,) float.

    `cost` gives (O(u), O(v)) from the actions: the paper's usage terms by default, or a table's
    (`costs.make_cost`, ``policy.cost``)."""
    c = correct.bool()
    pen = torch.full_like(c, -float(gamma), dtype=torch.float)
    o_u, o_v = cost(actions.frames, actions.stages)
    r_u = torch.where(c, 1.0 - o_u, pen)
    r_v = torch.where(c, 1.0 - o_v, pen)
    return r_u, r_v


class Baseline:
    """Reward baseline per head: "batch_mean" (the batch's mean reward) or "moving_average"
    (exponential moving average of past batch means; the first batch uses its own mean).

    "self_critical" (Rennie et al., 2017) is one baseline per clip: the reward the greedy actions
    of the same policy earn on that clip. `PolicyStep` computes it (it needs a second backbone
    forward); this class then only carries the kind. A clip that is always right (or always
    wrong) whatever the actions then gives no advantage, instead of reinforcing (or punishing)
    whatever was sampled for it, as a batch-wide baseline does.
    """

    def __init__(self, kind: str = "batch_mean", momentum: float = 0.9):
        if kind not in BASELINES:
            raise ValueError(f"baseline {kind!r} is not one of {list(BASELINES)}")
        self.kind, self.momentum = kind, float(momentum)
        self.value: Dict[str, Optional[float]] = {"u": None, "v": None}

    @property
    def per_clip(self) -> bool:
        return self.kind == "self_critical"

    def __call__(self, head: str, reward: torch.Tensor, batch_mean: Optional[float] = None) -> float:
        """Baseline for this batch's rewards of `head` ("u" or "v"); then update the average.

        `batch_mean` overrides the local mean (DDP: the mean over all processes).
        """
        if self.per_clip:
            raise ValueError("the self-critical baseline is per clip: PolicyStep computes it")
        mean = float(reward.mean()) if batch_mean is None else float(batch_mean)
        if self.kind == "batch_mean":
            return mean
        prev = self.value[head]
        b = mean if prev is None else prev
        self.value[head] = mean if prev is None else self.momentum * prev + (1 - self.momentum) * mean
        return b

    def state_dict(self) -> Dict[str, object]:
        return {"kind": self.kind, "momentum": self.momentum, "value": dict(self.value)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.value = dict(state.get("value", {"u": None, "v": None}))  # type: ignore[arg-type]


def reinforce_loss(actions: Actions, r_u: torch.Tensor, r_v: torch.Tensor, b_u: Union[float, torch.Tensor],
                   b_v: Union[float, torch.Tensor]) -> torch.Tensor:
    """-(R_u - b_u) log pi(u) - (R_v - b_v) log pi(v), mean over the batch (needs sampled log-probs);
    the baselines are scalars or one per clip."""
    if actions.log_prob_frames is None or actions.log_prob_stages is None:
        raise ValueError("actions carry no log-probabilities: sample them with sample_actions")
    adv_u = (r_u - b_u).detach()
    adv_v = (r_v - b_v).detach()
    return -(adv_u * actions.log_prob_frames + adv_v * actions.log_prob_stages).mean()


def bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of independent Bernoulli units, summed over units: (B, N) -> (B,)."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log()).sum(1)


# --- random policies (the Random and Random FT baselines) ---------------------------------------

def expected_frames(p: float, t: int) -> float:
    """Mean kept frames of Bernoulli(p) frame actions with the keep-at-least-one rule."""
    return t * p + (1.0 - p) ** t


def frame_prob_for(mean_frames: float, t: int) -> float:
    """Bernoulli probability whose mean kept-frame count (at least one kept) is `mean_frames`."""
    if not 1.0 <= mean_frames <= t:
        raise ValueError(f"mean frames {mean_frames} must be in [1, T={t}]")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_frames(mid, t) < mean_frames:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def random_actions(batch: int, t: int, k: int, frame_prob: float, stage_prob: float,
                   generator: Optional[torch.Generator] = None, device=None) -> Actions:
    """Random policy: frames ~ Bernoulli(frame_prob) (at least one kept, chosen at random),
    stages ~ Bernoulli(stage_prob)."""
    fp = torch.full((batch, t), float(frame_prob))
    u = torch.bernoulli(fp, generator=generator).bool()
    u = ensure_one_frame(u, torch.rand(batch, t, generator=generator))
    v = torch.bernoulli(torch.full((batch, k), float(stage_prob)), generator=generator).bool()
    if device is not None:
        u, v = u.to(device), v.to(device)
    return Actions(u, v)
