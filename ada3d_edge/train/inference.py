"""Clip-level inference shared by per-epoch validation and `ada3d eval`.

Test items hold N clips per video `(B, N, 3, T, S, S)`; clip scores (softmax, or sigmoid for
multi-label data) are averaged over a video's N clips. Costs are the analytic MACs of
`ada3d_edge.flops` for each clip's stage mask and kept-frame count T' at the test crop.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..flops import backbone_macs, selection_macs
from ..models.ada3d import Ada3D
from ..models.selection import Actions, greedy_actions
from ..models.specs import BackboneSpec, get_spec, mask_to_str, selection_spec_from_config
from .metrics import video_metric
from .rewards import random_actions


def backbone_spec(model_config: Dict[str, Any]) -> BackboneSpec:
    """The spec a checkpoint's model was built from (arch, classes, overrides)."""
    over = dict(model_config.get("backbone_overrides", {}))
    over.setdefault("num_frames", model_config["num_frames"])
    return get_spec(model_config["arch"], num_classes=model_config["num_classes"], **over)


class CostModel:
    """GFLOPs per clip: backbone for (mask, T') at `crop`, selection network on T frames."""

    def __init__(self, model_config: Dict[str, Any], crop: int):
        self.spec = backbone_spec(model_config)
        self.crop = int(crop)
        self.t = int(model_config["num_frames"])
        self.k = self.spec.num_stages_3d
        sel = selection_spec_from_config(model_config)
        self.selection_gflops = selection_macs(sel, frames=self.t, num_stages=self.k,
                                               num_frames_out=self.t) / 1e9
        self._cache = lru_cache(maxsize=None)(self._backbone)

    def _backbone(self, mask: str, frames: int) -> float:
        return backbone_macs(self.spec, mask, frames, self.crop) / 1e9

    def backbone(self, actions: Actions) -> np.ndarray:
        """(B,) backbone GFLOPs of each clip under its actions."""
        counts = actions.frames.sum(1).tolist()
        masks = [mask_to_str(m) for m in actions.stages.int().tolist()]
        return np.array([self._cache(m, int(c)) for m, c in zip(masks, counts)], dtype=np.float64)

    @property
    def upper(self) -> float:
        return self._cache("1" * self.k, self.t)


def all_actions(b: int, t: int, k: int, device) -> Actions:
    return Actions(torch.ones(b, t, dtype=torch.bool, device=device),
                   torch.ones(b, k, dtype=torch.bool, device=device))


def scores_of(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)


def test_batches(loader, device: torch.device) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]]:
    """Yield (clips (B*N, 3, T, S, S), policy (B*N, 3, T, P, P), labels, B, N); skips empty batches."""
    for batch in loader:
        if batch["clip"] is None:
            continue
        clip, policy = batch["clip"], batch["policy"]
        b, n = clip.shape[:2]
        yield (clip.flatten(0, 1).to(device, non_blocking=True),
               policy.flatten(0, 1).to(device, non_blocking=True), batch["label"], b, n), batch


def video_scores(clip_scores: torch.Tensor, b: int, n: int) -> np.ndarray:
    return clip_scores.reshape(b, n, -1).mean(1).float().cpu().numpy()


class UsageAccumulator:
    """Per-video scores and per-clip usage (# frames, # 3D stages, backbone GFLOPs) of one way of
    choosing actions over a pass of test batches; per-epoch validation and `ada3d eval` both use it."""

    def __init__(self) -> None:
        self.scores: List[np.ndarray] = []
        self.frames: List[np.ndarray] = []
        self.stages: List[np.ndarray] = []
        self.gflops: List[np.ndarray] = []

    def __bool__(self) -> bool:
        return bool(self.scores)

    def add_scores(self, logits: torch.Tensor, multi_label: bool, b: int, n: int) -> None:
        """Video scores of (B*N, C) clip logits."""
        self.scores.append(video_scores(scores_of(logits, multi_label), b, n))

    def add(self, logits: torch.Tensor, acts: Actions, multi_label: bool, b: int, n: int,
            cost: Optional[CostModel] = None) -> None:
        """Scores of (B*N, C) clip logits and the usage of their actions (GFLOPs when `cost` is given)."""
        self.add_scores(logits, multi_label, b, n)
        cpu = Actions(acts.frames.cpu(), acts.stages.cpu())
        self.frames.append(cpu.frames.sum(1).float().numpy())
        self.stages.append(cpu.stages.sum(1).float().numpy())
        if cost is not None:
            self.gflops.append(cost.backbone(cpu))

    def metric(self, labels: np.ndarray, multi_label: bool) -> float:
        return video_metric(np.concatenate(self.scores), labels, multi_label)

    @property
    def mean_frames(self) -> float:
        return float(np.concatenate(self.frames).mean())

    @property
    def mean_3d(self) -> float:
        return float(np.concatenate(self.stages).mean())

    @property
    def mean_backbone_gflops(self) -> float:
        return float(np.concatenate(self.gflops).mean())


@torch.no_grad()
def quick_validate(model: Ada3D, loader, mode: str, multi_label: bool, device: torch.device,
                   threshold: float = 0.5, random_probs: Optional[Tuple[float, float]] = None,
                   cost: Optional[CostModel] = None, progress: bool = False) -> Dict[str, float]:
    """Per-epoch validation of a training stage (the model is put in eval mode).

    mode "upper": backbone on all frames/stages and the selection classifier; "ada3d": greedy
    policies; "random": random policies with `random_probs` = (frame_prob, stage_prob).
    """
    from tqdm import tqdm

    model.eval()
    acc, sel, labels = UsageAccumulator(), UsageAccumulator(), []
    for (clip, policy, lab, b, n), _ in tqdm(test_batches(loader, device), desc="validate",
                                              leave=False, disable=not progress):
        t, k = clip.shape[2], model.backbone.num_stages_3d
        if mode == "upper":
            logits = model.backbone(clip)
            if model.selection.classifier is not None:
                sel.add_scores(model.selection.classify(policy), multi_label, b, n)
            acts = all_actions(clip.shape[0], t, k, device)
        elif mode == "ada3d":
            m, s = model.selection(policy)
            acts = greedy_actions(m, s, threshold)
            logits = model(clip, acts)
        else:
            acts = random_actions(clip.shape[0], t, k, *random_probs, device=device)
            logits = model(clip, acts)
        acc.add(logits, acts, multi_label, b, n, cost)
        labels.append(lab.numpy())
    if not acc:
        return {}
    labels_np = np.concatenate(labels)
    res = {"val_metric": acc.metric(labels_np, multi_label), "val_frames": acc.mean_frames,
           "val_stages3d": acc.mean_3d}
    t, k = model.num_frames, model.backbone.num_stages_3d
    res["val_frames_frac"] = res["val_frames"] / t
    res["val_stages_frac"] = res["val_stages3d"] / max(k, 1)
    if sel:
        res["val_selection_metric"] = sel.metric(labels_np, multi_label)
    if cost is not None and acc.gflops:
        res["val_gflops"] = acc.mean_backbone_gflops + (cost.selection_gflops if mode != "upper" else 0.0)
    return res
