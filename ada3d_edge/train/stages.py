"""What each training stage optimises: one small module per stage whose forward returns the loss.

* ``upper`` (stage 0): the backbone on all frames with every stage 3D (cross-entropy), plus the
  selection network's MobileNetV2 as a 2D classifier (`SelectionNet.classify`, temporal average
  pooling), both in one loss; BatchNorm in train mode.
* ``policy`` (stage 1): the backbone frozen in eval mode; the selection network samples actions,
  the backbone predicts under them, REINFORCE with a baseline on the rewards of Eq. 4.
* ``joint`` (stage 2): the same policy gradient plus cross-entropy for the backbone under the
  sampled actions (Eq. 8).
* ``random_ft``: cross-entropy for the backbone under random policies (the Random FT baseline).
* ``joint_from_upper``: ``joint`` started from ``upper`` (Table 5's "w/o Tr").
* ``transfer``: cross-entropy for the backbone under a frozen selection network's actions (Table 3).

In ``joint`` and ``random_ft`` the backbone's BatchNorm layers stay in eval mode (statistics frozen
from stage 0): a batch is split into groups by kept-frame count T' and by stage mask, and a group of
one or two clips gives useless batch statistics. Their affine weights are still trained.
Multi-label data uses binary cross-entropy instead of cross-entropy.

What each stage trains, its modes, optimiser groups and recipe keys are its `StageSpec`
(stage_specs.py). Wrapping one of these modules in DDP synchronises exactly the parameters that
receive gradients; `prepare(model, stage)` freezes the rest.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.ada3d import Ada3D
from ..models.selection import Actions, greedy_actions, sample_actions
from .costs import CostFn, usage_costs
from .dist import DistInfo, all_reduce_mean
from .rewards import Baseline, bernoulli_entropy, is_correct, random_actions, reinforce_loss, rewards

Stats = Dict[str, torch.Tensor]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for (B,) int labels, binary cross-entropy for (B, C) multi-hot labels."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def _freeze(module: nn.Module, frozen: bool = True) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)


def bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode (frozen running statistics)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def part_modules(model: Ada3D, part: str) -> List[nn.Module]:
    """The modules of a model part (stage_specs.PARTS); [] when the model does not have it."""
    sel = model.selection
    if part == "backbone":
        return [model.backbone]
    if part == "policy_heads":
        return [sel.frame_head, sel.stage_head]
    if part == "selection_classifier":
        return [sel.classifier] if sel.classifier is not None else []
    if part == "selection_body":
        others = {id(m) for m in (sel.frame_head, sel.stage_head, sel.classifier) if m is not None}
        return [m for m in sel.children() if id(m) not in others]
    raise ValueError(f"unknown model part {part!r}")


def prepare(model: Ada3D, spec: "StageSpec") -> None:
    """Set requires_grad for the stage `spec` (a `stage_specs.StageSpec`): its `trains` parts only.

    The spec is passed in, not looked up here: stage_specs builds this module's steps, so importing
    it back would be a cycle.
    """
    _freeze(model)
    for part in spec.trains:
        modules = part_modules(model, part)
        if not modules:
            raise ValueError(f"stage {spec.name!r} trains the {part.replace('_', ' ')}, which this model "
                             "lacks: build the selection network with num_classes")
        for m in modules:
            _freeze(m, False)


def set_train_modes(model: Ada3D, spec: "StageSpec") -> None:
    """Train/eval modes of the stage `spec` (call at the start of every epoch)."""
    model.train()
    if spec.backbone_mode == "eval":
        model.backbone.eval()
    elif spec.backbone_mode == "bn_eval":
        bn_eval(model.backbone)
    if spec.selection_mode == "eval":
        model.selection.eval()


class UpperStep(nn.Module):
    """Stage 0. With `random_policy_prob` > 0, that share of the steps runs the whole batch under one
    random policy (frames and stages kept with probability 1/2), so that the backbone also works with
    stages degraded and frames dropped. The paper gets this from a Kinetics-pretrained 3D model whose
    centre taps already work; a small model trained from scratch does not (see train/README.md).
    One policy per batch keeps BatchNorm's batch statistics meaningful. 0 (default) = the paper's Upper.
    """

    def __init__(self, model: Ada3D, random_policy_prob: float = 0.0):
        super().__init__()
        self.model = model
        self.random_policy_prob = float(random_policy_prob)

    def forward(self, clip: torch.Tensor, policy: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Stats]:
        if self.random_policy_prob > 0 and float(torch.rand(())) < self.random_policy_prob:
            b, t, k = clip.shape[0], clip.shape[2], self.model.backbone.num_stages_3d
            one = random_actions(1, t, k, 0.5, 0.5, device=clip.device)
            logits = self.model(clip, Actions(one.frames.expand(b, t), one.stages.expand(b, k)))
        else:
            logits = self.model.backbone(clip)
        sel_logits = self.model.selection.classify(policy)
        loss_b = classification_loss(logits, labels)
        loss_s = classification_loss(sel_logits, labels)
        return loss_b + loss_s, {"loss_backbone": loss_b.detach(), "loss_selection": loss_s.detach(),
                                 "acc": is_correct(logits.detach(), labels).float().mean(),
                                 "selection_acc": is_correct(sel_logits.detach(), labels).float().mean()}


class PolicyStep(nn.Module):
    """Stage 1 (`train_backbone=False`) and stage 2 (`train_backbone=True`).

    `entropy_coef` > 0 subtracts that multiple of the policies' mean Bernoulli entropy from the loss
    (the usual exploration bonus of policy-gradient methods; not in the paper): without it a
    head's units can saturate to one input-independent action before the head's weights have
    learned which inputs need what.
    """

    def __init__(self, model: Ada3D, gamma: float, baseline: Baseline, train_backbone: bool,
                 dist_info: Optional[DistInfo] = None, entropy_coef: float = 0.0, cost: CostFn = usage_costs):
        super().__init__()
        self.model = model
        self.cost = cost  # the reward's O(u), O(v) (policy.cost)
        self.gamma = float(gamma)
        self.entropy_coef = float(entropy_coef)
        self.baseline = baseline
        self.train_backbone = train_backbone
        self.dist_info = dist_info or DistInfo()

    def forward(self, clip: torch.Tensor, policy: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Stats]:
        m, n = self.model.selection(policy)
        actions = sample_actions(m, n)
        if self.train_backbone:
            logits = self.model(clip, actions)
            cls_loss = classification_loss(logits, labels)
        else:
            with torch.no_grad():
                logits = self.model(clip, actions)
            cls_loss = logits.new_zeros(())
        correct = is_correct(logits.detach(), labels)
        r_u, r_v = rewards(correct, actions, self.gamma, self.cost)
        if self.baseline.per_clip:
            b_u, b_v = self.greedy_rewards(clip, m, n, labels)
        else:
            b_u = self.baseline("u", r_u, all_reduce_mean(float(r_u.mean()), self.dist_info))
            b_v = self.baseline("v", r_v, all_reduce_mean(float(r_v.mean()), self.dist_info))
        pg_loss = reinforce_loss(actions, r_u, r_v, b_u, b_v)
        entropy = (bernoulli_entropy(m) + bernoulli_entropy(n)).mean()
        if self.entropy_coef > 0:
            pg_loss = pg_loss - self.entropy_coef * entropy
        k = max(actions.stages.shape[1], 1)
        stats = {"loss_policy": pg_loss.detach(), "loss_cls": cls_loss.detach(), "entropy": entropy.detach(),
                 "acc": correct.float().mean(), "reward": (r_u + r_v).mean(),
                 "frames": actions.frames.float().sum(1).mean(),
                 "stages3d": actions.stages.float().sum(1).mean(),
                 "frames_frac": actions.frames.float().mean(),
                 "stages_frac": actions.stages.float().sum(1).mean() / k}
        return cls_loss + pg_loss, stats

    @torch.no_grad()
    def greedy_rewards(self, clip: torch.Tensor, m: torch.Tensor, n: torch.Tensor,
                       labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The self-critical baseline: the rewards (R_u, R_v) of the greedy actions, one per clip.
        The backbone runs in its current mode, as for the sampled actions."""
        greedy = greedy_actions(m.detach(), n.detach())
        return rewards(is_correct(self.model(clip, greedy), labels), greedy, self.gamma, self.cost)


class RandomFtStep(nn.Module):
    def __init__(self, model: Ada3D, frame_prob: float, stage_prob: float):
        super().__init__()
        self.model = model
        self.frame_prob, self.stage_prob = float(frame_prob), float(stage_prob)

    def forward(self, clip: torch.Tensor, policy: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Stats]:
        b, t = clip.shape[0], clip.shape[2]
        k = self.model.backbone.num_stages_3d
        actions = random_actions(b, t, k, self.frame_prob, self.stage_prob, device=clip.device)
        logits = self.model(clip, actions)
        loss = classification_loss(logits, labels)
        return loss, {"acc": is_correct(logits.detach(), labels).float().mean(),
                      "frames": actions.frames.float().sum(1).mean(),
                      "stages3d": actions.stages.float().sum(1).mean()}


class TransferStep(nn.Module):
    """Policy transfer (the paper's Table 3): cross-entropy for the backbone under the actions of a
    frozen selection network learned on another dataset; `actions` "sample" draws them from its
    probabilities (as joint fine-tuning does), "greedy" thresholds them (as inference does)."""

    def __init__(self, model: Ada3D, actions: str = "sample", threshold: float = 0.5):
        super().__init__()
        if actions not in ("sample", "greedy"):
            raise ValueError(f"transfer.actions={actions!r} is not one of ['sample', 'greedy']")
        self.model = model
        self.actions, self.threshold = actions, float(threshold)

    def forward(self, clip: torch.Tensor, policy: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Stats]:
        with torch.no_grad():
            m, n = self.model.selection(policy)
            actions = sample_actions(m, n) if self.actions == "sample" else greedy_actions(m, n, self.threshold)
        logits = self.model(clip, actions)
        loss = classification_loss(logits, labels)
        return loss, {"acc": is_correct(logits.detach(), labels).float().mean(),
                      "frames": actions.frames.float().sum(1).mean(),
                      "stages3d": actions.stages.float().sum(1).mean()}
