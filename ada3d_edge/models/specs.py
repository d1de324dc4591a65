"""Architectures as data (pure Python, no torch): one frozen spec per stage, one registry of names.

`flops.py` and the torch builders read the same specs, so a FLOPs figure and a forward pass can
never disagree about the network they describe.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..masks import all_masks, mask_to_str, str_to_mask  # noqa: F401  (re-exported: models' mask API)


@dataclass(frozen=True)
class StageSpec:
    """One ResNet stage of bottleneck blocks.

    `temporal_kernels` is the temporal kernel of each block's `conv_a` (k x 1 x 1), repeated
    cyclically over the blocks as in PySlowFast's `_TEMPORAL_KERNEL_BASIS`.
    """

    name: str
    depth: int
    width: int  # inner width; the block's output is width * expansion
    temporal_kernels: Tuple[int, ...]
    spatial_stride: int

    def kernel(self, block: int) -> int:
        return self.temporal_kernels[block % len(self.temporal_kernels)]

    @property
    def is_3d(self) -> bool:
        return any(self.kernel(i) > 1 for i in range(self.depth))


@dataclass(frozen=True)
class BackboneSpec:
    """A 3D ResNet: stem conv kt x 7 x 7 stride (1,2,2) + max-pool 1x3x3 stride (1,2,2), stages, head.

    The degradable stages (the K that the selection network switches) are the stem (when its
    temporal kernel is > 1) and every stage holding a temporal kernel > 1, in network order.
    """

    name: str
    stages: Tuple[StageSpec, ...]
    stem_width: int = 64
    stem_kernel_t: int = 1
    stem_kernel_s: int = 7
    expansion: int = 4
    temporal_pool: bool = False  # PySlowFast/pytorchvideo I3D: max-pool (2,1,1) after res2
    num_classes: int = 400
    num_frames: int = 8
    sampling_stride: int = 8
    crop_size: int = 224
    dropout: float = 0.5

    @property
    def degradable(self) -> Tuple[str, ...]:
        names: List[str] = ["stem"] if self.stem_kernel_t > 1 else []
        names += [s.name for s in self.stages if s.is_3d]
        return tuple(names)

    @property
    def num_stages_3d(self) -> int:
        return len(self.degradable)

    @property
    def num_features(self) -> int:
        return self.stages[-1].width * self.expansion


def _resnet50_stages(kernels: Tuple[Tuple[int, ...], ...], widths=(64, 128, 256, 512),
                     depths=(3, 4, 6, 3)) -> Tuple[StageSpec, ...]:
    names = ("res2", "res3", "res4", "res5")
    return tuple(
        StageSpec(name=n, depth=d, width=w, temporal_kernels=k, spatial_stride=1 if i == 0 else 2)
        for i, (n, d, w, k) in enumerate(zip(names, depths, widths, kernels))
    )


_REGISTRY: Dict[str, Callable[[], BackboneSpec]] = {}


def register(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def slow_r50() -> BackboneSpec:
    """SlowOnly R50 (PySlowFast `slow` basis): 3D only in res4 and res5, K = 2."""
    return BackboneSpec(name="slow_r50", stages=_resnet50_stages(((1,), (1,), (3,), (3,))))


@register
def i3d_r50() -> BackboneSpec:
    """I3D R50 (PySlowFast `i3d` basis), the paper's variant without the temporal pool, K = 5."""
    return BackboneSpec(name="i3d_r50", stem_kernel_t=5,
                        stages=_resnet50_stages(((3,), (3, 1), (3, 1), (1, 3))))


@register
def slow_tiny() -> BackboneSpec:
    """A small SlowOnly for tests and the CPU demo: same code, 1 block per stage, widths /8."""
    return BackboneSpec(name="slow_tiny", stem_width=8, num_classes=8, crop_size=64,
                        num_frames=8, sampling_stride=2, dropout=0.0,
                        stages=_resnet50_stages(((1,), (1,), (3,), (3,)), widths=(8, 16, 32, 64),
                                                depths=(1, 1, 1, 1)))


@register
def i3d_tiny() -> BackboneSpec:
    """A small I3D (K = 5) for tests: 1-2 blocks per stage so the alternating kernels show."""
    return BackboneSpec(name="i3d_tiny", stem_width=8, stem_kernel_t=5, num_classes=8, crop_size=64,
                        num_frames=8, sampling_stride=2, dropout=0.0,
                        stages=_resnet50_stages(((3,), (3, 1), (3, 1), (1, 3)), widths=(8, 16, 32, 64),
                                                depths=(1, 2, 2, 2)))


def list_archs() -> List[str]:
    return sorted(_REGISTRY)


def get_spec(arch: str, **overrides) -> BackboneSpec:
    """The spec of a registered arch, with field overrides (e.g. `num_classes=8, crop_size=112`).

    `depths=(...)` and `widths=(...)` override the per-stage block counts and inner widths.
    """
    if arch not in _REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; registered: {', '.join(list_archs())}")
    spec = _REGISTRY[arch]()
    depths = overrides.pop("depths", None)
    widths = overrides.pop("widths", None)
    if depths is not None or widths is not None:
        depths = tuple(depths or [s.depth for s in spec.stages])
        widths = tuple(widths or [s.width for s in spec.stages])
        if len(depths) != len(spec.stages) or len(widths) != len(spec.stages):
            raise ValueError(f"depths and widths need {len(spec.stages)} values, got {depths} and {widths}")
        spec = replace(spec, stages=tuple(replace(s, depth=int(d), width=int(w))
                                          for s, d, w in zip(spec.stages, depths, widths)))
    valid = {f for f in BackboneSpec.__dataclass_fields__}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown backbone option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    return replace(spec, **overrides)


@dataclass(frozen=True)
class SelectionSpec:
    """The selection network: MobileNetV2 (width multiplier) on policy_size frames."""

    width_mult: float = 1.0
    policy_size: int = 112
    settings: Tuple[Tuple[int, int, int, int], ...] = field(default=(
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)))  # (expand t, channels c, repeats n, stride s)
    stem_channels: int = 32
    last_channels: int = 1280


SELECTION_GROUPS = len(SelectionSpec().settings)  # MobileNetV2's 7 groups of inverted residuals


def selection_spec(width_mult: float = 1.0, policy_size: int = 112, depth: Optional[int] = None,
                   groups: Optional[int] = None, last_channels: Optional[int] = None) -> SelectionSpec:
    """The recipe's selection network. `depth` caps the inverted residuals per MobileNetV2 group
    (None: MobileNetV2's 1-2-3-4-3-3-1; 1: one block per group); `groups` keeps the first groups of
    the seven (None: all). At the demo's scale the network's cost is mostly per-layer overhead, so
    depth, not width, is what makes it light (benchmarks/results/selection_candidates_cpu.md).
    `last_channels` replaces the final 1x1 convolution's 1280 channels (None: MobileNetV2's); at
    2x2 pixels that convolution is most of what is left of a 4-block net."""
    spec = SelectionSpec(width_mult=float(width_mult), policy_size=int(policy_size))
    if last_channels is not None:
        if int(last_channels) < 8:
            raise ValueError(f"selection last_channels must be >= 8 or null, got {last_channels}")
        spec = replace(spec, last_channels=int(last_channels))
    settings = spec.settings
    if groups is not None:
        if not 1 <= int(groups) <= len(settings):
            raise ValueError(f"selection groups must be in 1..{len(settings)} or null, got {groups}")
        settings = settings[:int(groups)]
    if depth is not None:
        if int(depth) < 1:
            raise ValueError(f"selection depth must be >= 1 block per group or null, got {depth}")
        settings = tuple((e, c, min(n, int(depth)), s) for e, c, n, s in settings)
    return replace(spec, settings=settings)


def selection_spec_from_config(model_config: Dict[str, Any]) -> SelectionSpec:
    """The selection network of a checkpoint's `model_config` (older ones have neither
    `selection_depth`, `selection_groups` nor `selection_last_channels`)."""
    return selection_spec(model_config["selection_width"], model_config["policy_size"],
                          model_config.get("selection_depth"), model_config.get("selection_groups"),
                          model_config.get("selection_last_channels"))


def make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet channel rounding (as in the reference implementation)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v
