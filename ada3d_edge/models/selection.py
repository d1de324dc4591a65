"""The selection network: MobileNetV2 on 112x112 frames, features averaged over frames and
standardised (BatchNorm without affine parameters), two heads.

`m` (T sigmoids: keep frame t) and `n` (K sigmoids: keep stage k 3D). Training samples Bernoulli
actions; inference is greedy (`> threshold`). At least one frame is always kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .specs import SelectionSpec, make_divisible


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


def build_mobilenet_v2_features(spec: SelectionSpec) -> nn.Sequential:
    """MobileNetV2's feature extractor (stem, inverted residuals, last 1x1 conv), no classifier."""
    w = spec.width_mult
    c = make_divisible(spec.stem_channels * w)
    layers = [_conv_bn(3, c, 3, 2)]
    for t, ch, n, s in spec.settings:
        cout = make_divisible(ch * w)
        for i in range(n):
            layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
            c = cout
    layers.append(_conv_bn(c, make_divisible(spec.last_channels * max(1.0, w)), 1))
    return nn.Sequential(*layers)


@dataclass
class Actions:
    """Per-clip actions: `frames` (B, T) bool (u), `stages` (B, K) bool (v, 1 = 3D), their log-probs (B,)."""

    frames: torch.Tensor
    stages: torch.Tensor
    log_prob_frames: Optional[torch.Tensor] = None
    log_prob_stages: Optional[torch.Tensor] = None


def _log_prob(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Sum over units of the Bernoulli log-likelihood of actions `a` (0/1 floats) under `p`."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return (a * p.log() + (1 - a) * (1 - p).log()).sum(1)


def ensure_one_frame(frames: torch.Tensor, frame_probs: torch.Tensor) -> torch.Tensor:
    """Where no frame is kept, keep the most probable one."""
    empty = ~frames.any(1)
    if empty.any():
        frames = frames.clone()
        top = frame_probs.argmax(1)
        frames[empty, top[empty]] = True
    return frames


def sample_actions(frame_probs: torch.Tensor, stage_probs: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> Actions:
    """Bernoulli actions with their log-probabilities (for REINFORCE)."""
    u = torch.bernoulli(frame_probs.detach(), generator=generator).bool()
    v = torch.bernoulli(stage_probs.detach(), generator=generator).bool()
    u = ensure_one_frame(u, frame_probs.detach())
    return Actions(u, v, _log_prob(frame_probs, u.float()), _log_prob(stage_probs, v.float()))


def greedy_actions(frame_probs: torch.Tensor, stage_probs: torch.Tensor, threshold: float = 0.5) -> Actions:
    """Inference actions: `p > threshold`, at least one frame (the argmax) kept."""
    u = ensure_one_frame(frame_probs > threshold, frame_probs)
    v = stage_probs > threshold
    return Actions(u, v, _log_prob(frame_probs, u.float()), _log_prob(stage_probs, v.float()))


class SelectionNet(nn.Module):
    """forward(frames (B, 3, T, P, P)) -> (frame_probs (B, T), stage_probs (B, K)).

    `classify(frames)` is the 2D classifier with temporal average pooling used to pretrain the
    MobileNetV2 (needs `num_classes`).
    """

    def __init__(self, num_frames: int, num_stages: int, num_classes: Optional[int] = None,
                 spec: SelectionSpec = SelectionSpec(), init_keep_prob: float = 0.9):
        super().__init__()
        self.spec = spec
        self.num_frames = num_frames
        self.num_stages = num_stages
        self.features = build_mobilenet_v2_features(spec)
        self.num_features = make_divisible(spec.last_channels * max(1.0, spec.width_mult))
        # The clip features are standardised before the two heads. Raw MobileNetV2 features share a
        # large mean component, so REINFORCE moved the heads' weights along it like a second bias:
        # on the demo every unit saturated to one input-independent action (logits +3 / -6 for
        # static and motion clips alike) before the weights learned which clips need what.
        self.head_norm = nn.BatchNorm1d(self.num_features, affine=False)
        self.frame_head = nn.Linear(self.num_features, num_frames)
        self.stage_head = nn.Linear(self.num_features, num_stages)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # start near Upper (keep most frames and stages); the reward then pushes usage down
        bias = float(torch.logit(torch.tensor(init_keep_prob)))
        nn.init.constant_(self.frame_head.bias, bias)
        nn.init.constant_(self.stage_head.bias, bias)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, P, P) -> per-frame pooled features (B, T, F)."""
        if frames.dim() != 5 or frames.shape[1] != 3:
            raise ValueError(f"selection input must be (B, 3, T, P, P), got {tuple(frames.shape)}")
        b, c, t, h, w = frames.shape
        x = self.image_features(frames.transpose(1, 2).reshape(b * t, c, h, w))
        return x.reshape(b, t, -1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, P, P) independent frames -> pooled features (N, F): the per-frame half of the net.

        The bundle exports it on its own (``policy_features.onnx``) so a stream computes it once per
        frame and reuses it in every window that frame is part of.
        """
        return self.features(images).mean((2, 3))

    def standardise(self, feat: torch.Tensor) -> torch.Tensor:
        """Clip features (B, F) -> what the two heads see."""
        hn = self.head_norm
        if self.training and feat.shape[0] > 1:
            return hn(feat)  # batch statistics, and the running ones updated
        # inference, or one clip (no batch statistics): the running statistics, written out as plain
        # arithmetic so the ONNX export needs no BatchNormalization of unknown width
        return (feat - hn.running_mean) * torch.rsqrt(hn.running_var + hn.eps)

    def forward(self, frames: torch.Tensor):
        if frames.shape[2] != self.num_frames:
            raise ValueError(f"selection network expects all T={self.num_frames} frames, got {frames.shape[2]}")
        return self.heads(self.frame_features(frames).mean(1))

    def heads(self, clip_features: torch.Tensor):
        """Mean frame features of each clip (B, F) -> (frame_probs (B, T), stage_probs (B, K))."""
        feat = self.standardise(clip_features)
        return torch.sigmoid(self.frame_head(feat)), torch.sigmoid(self.stage_head(feat))

    def head_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The inference heads as one affine map ``(P (F, T+K), c (T+K,))`` of the frame features.

        Standardising (running statistics) and the two linear heads are affine in the clip features,
        and those are the mean of the frame features, so the heads' logits are
        ``mean_t(f_t @ P) + c``. The bundle's split network uses it: each frame's T+K terms
        ``f_t @ P`` are what a stream caches (10 numbers for the demo instead of 1280 features),
        and the heads left are a bias and sigmoids (benchmarks/results/fixed_costs_cpu.md).
        """
        hn = self.head_norm
        scale = torch.rsqrt(hn.running_var + hn.eps)
        weight = torch.cat([self.frame_head.weight, self.stage_head.weight])  # (T+K, F)
        bias = torch.cat([self.frame_head.bias, self.stage_head.bias])
        return (weight * scale).t(), bias - weight @ (scale * hn.running_mean)

    def classify(self, frames: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this selection network has no classifier: build it with num_classes")
        return self.classifier(self.frame_features(frames).mean(1))
