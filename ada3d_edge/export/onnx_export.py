"""ONNX export of one stage configuration of the backbone, and of the selection network.

Plain functions (Ultralytics style): each writes one file and returns its path. The backbone is
exported with its stage mask fixed; the convs of degraded stages (and, per ``fold_plan``, the 2D
tail of the network) run as real 2D ``Conv`` nodes over frames folded into the batch, so the FLOPs a
degraded stage saves become time saved (ARCHITECTURE.md section 1).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (TorchScript tracing). The dynamo exporter needs
``onnxscript`` and symbolic shapes for T'; the traced graph keeps B and T' dynamic through
``Shape``/``Reshape`` ops and is verified at several T' and batch sizes (``verify.py``).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import torch
import torch.nn as nn

from ..bundle import BACKBONE_INPUT, BACKBONE_OUTPUT, POLICY_FEATURES, POLICY_INPUT, POLICY_OUTPUTS
from ..models.backbone import Backbone
from ..models.fixed_mask import FixedMaskBackbone  # noqa: F401  (also re-exported for old imports)
from ..models.layers import TemporalConv
from ..models.selection import SelectionNet

MIN_OPSET = 17


def max_opset() -> int:
    """Newest opset this torch's exporter writes (torch.onnx's own constant; 20 if it moved)."""
    try:
        from torch.onnx import _constants
        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return 20
PathLike = Union[str, Path]


def check_opset(opset: int) -> int:
    """Opset as int; ValueError outside ``MIN_OPSET``..``max_opset()``."""
    opset = int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: use --opset {MIN_OPSET} or newer")
    if opset > max_opset():
        raise ValueError(f"opset {opset} is newer than torch {torch.__version__} exports: "
                         f"use --opset {MIN_OPSET}..{max_opset()}")
    return opset


FOLD_MODES = ("auto", "all", "degraded", "none")


def fold_mode(fold_frames: Union[bool, str]) -> str:
    """Normalise the ``fold_frames`` option: True -> "auto", False -> "degraded", or a mode name."""
    if fold_frames is True:
        return "auto"
    if fold_frames is False:
        return "degraded"
    if fold_frames not in FOLD_MODES:
        raise ValueError(f"fold_frames {fold_frames!r} unknown; valid: True, False or one of {list(FOLD_MODES)}")
    return str(fold_frames)


def _units(backbone: Backbone) -> List[Tuple[str, List[TemporalConv]]]:
    """(part name, convs) per unit: the stem, then each bottleneck block (with its shortcut)."""
    units = [("stem", [m for m in backbone.stem.modules() if isinstance(m, TemporalConv)])]
    for stage in backbone.stages:
        for block in stage.blocks:
            units.append((stage.name, [m for m in block.modules() if isinstance(m, TemporalConv)]))
    return units


def _degraded(backbone: Backbone, mask: str) -> Dict[str, bool]:
    bits = backbone.normalize_mask(mask, 1).tolist()
    return {name: not b for name, b in zip(backbone.stage_names, bits)}


def fold_plan(backbone: Backbone, mask: str,
              fold_frames: Union[bool, str] = True) -> List[Tuple[TemporalConv, bool, int]]:
    """(conv, folded?, effective temporal kernel) for every conv when exporting ``mask``.

    A unit is the stem or one bottleneck block (with its shortcut). Degraded stages are folded (their
    convs are 2D by definition; ARCHITECTURE.md) in every mode but "none". For convs of temporal
    kernel 1 elsewhere:
    - "all": every one is folded;
    - "auto" (default): a unit is folded when it has no temporal conv and no unit after it has one
      (the 2D tail of the network runs folded end to end; a 3D block, and the 2D stages in front
      of one, stay Conv3d(1, k, k) and pay no Transpose/Reshape round trips);
    - "degraded": nothing else is folded;
    - "none": nothing is folded, degraded stages included: they run as Conv3d(1, k, k) with the centre
      tap (the same function). At the demo's scale inside the shared graph's ``If`` branches this was
      the faster 2D layout for every configuration (``fold_choice``, which picks per configuration).
    Measured (ONNX Runtime CPU, slow_r50 @112, T=8, 1 thread, CPU-time medians, ratio to mask 11
    with nothing folded): 11: all 1.117 / auto 1.000; 10: all 1.058 / auto 1.007; 00: all = auto 0.853
    / degraded 0.921. Folding the convs inside 3D blocks never paid off.
    """
    mode = fold_mode(fold_frames)
    degraded = _degraded(backbone, mask)
    units = []
    for name, convs in _units(backbone):
        units.append((name, convs, [c.effective_weight(degraded.get(name, False)).shape[2] for c in convs]))
    last_3d = max((i for i, (_, _, kts) in enumerate(units) if any(k > 1 for k in kts)), default=-1)
    plan = []
    for i, (name, convs, kts) in enumerate(units):
        tail_2d = i > last_3d
        for c, kt in zip(convs, kts):
            fold = kt == 1 and mode != "none" and (degraded.get(name, False) or mode == "all"
                                                   or (mode == "auto" and tail_2d))
            plan.append((c, fold, kt))
    return plan


@contextlib.contextmanager
def folded(backbone: Backbone, mask: str, fold_frames: Union[bool, str] = True) -> Iterator[Backbone]:
    """Set ``fold_frames`` on each conv per ``fold_plan`` for exporting ``mask``; restore after."""
    plan = fold_plan(backbone, mask, fold_frames)
    before = [c.fold_frames for c, _, _ in plan]
    try:
        for c, fold, _ in plan:
            c.fold_frames = fold
        yield backbone
    finally:
        for (c, _, _), old in zip(plan, before):
            c.fold_frames = old


def expected_conv_ranks(backbone: Backbone, mask: str, fold_frames: Union[bool, str] = True) -> Dict[int, int]:
    """How many Conv nodes of kernel rank 3 and 2 the exported graph of ``mask`` must hold."""
    counts = {2: 0, 3: 0}
    for _, fold, _ in fold_plan(backbone, mask, fold_frames):
        counts[2 if fold else 3] += 1
    return counts


def onnx_conv_ranks(path: PathLike) -> Dict[int, int]:
    """Count the Conv nodes of an ONNX file by kernel rank (2 = 2D, 3 = 3D)."""
    import onnx

    counts: Dict[int, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type == "Conv":
            shape = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
            rank = len(shape) if shape else -1
            counts[rank] = counts.get(rank, 0) + 1
    return counts


def _export(module: nn.Module, args: tuple, path: Path, inputs: List[str], outputs: List[str],
            axes: Dict[str, Dict[int, str]], opset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()  # the legacy exporter restores the wrapper's mode afterwards, recursively
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter deprecation notice
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=check_opset(opset), do_constant_folding=True,
                          dynamo=False)
    return path


def export_backbone(backbone: Backbone, mask: str, path: PathLike, crop: int, opset: int = 17,
                    fold_frames: Union[bool, str] = True, num_frames: int | None = None) -> Path:
    """Write ``backbone_<mask>.onnx``: input ``clip`` (B, 3, T', S, S), output ``logits`` (B, C).

    B and T' are dynamic; ``num_frames`` (default: the spec's T) is only the tracing example.
    """
    t = int(num_frames or backbone.spec.num_frames)
    was_training = backbone.training
    backbone.eval()
    try:
        with folded(backbone, mask, fold_frames):
            return _export(FixedMaskBackbone(backbone, mask), (torch.zeros(1, 3, t, crop, crop),), Path(path),
                           [BACKBONE_INPUT], [BACKBONE_OUTPUT],
                           {BACKBONE_INPUT: {0: "B", 2: "T"}, BACKBONE_OUTPUT: {0: "B"}}, opset)
    finally:
        backbone.train(was_training)


def _selection(model: nn.Module, what: str) -> SelectionNet:
    selection = model if isinstance(model, SelectionNet) else getattr(model, "selection", None)
    if not isinstance(selection, SelectionNet):
        raise TypeError(f"{what} needs an Ada3D or a SelectionNet, got {type(model).__name__}")
    return selection


def export_policy(model: nn.Module, path: PathLike, num_frames: int, policy_size: int,
                  opset: int = 17) -> Path:
    """Write ``policy.onnx``: input ``frames`` (B, 3, T, P, P) -> ``frame_probs`` (B, T), ``stage_probs`` (B, K).

    ``model`` is an ``Ada3D`` (its ``selection``) or a ``SelectionNet``; B is dynamic, T is fixed.
    """
    selection = _selection(model, "export_policy")
    was_training = selection.training
    try:
        p = int(policy_size)
        return _export(selection, (torch.zeros(1, 3, int(num_frames), p, p),), Path(path), [POLICY_INPUT],
                       list(POLICY_OUTPUTS), {POLICY_INPUT: {0: "B"}, **{o: {0: "B"} for o in POLICY_OUTPUTS}},
                       opset)
    finally:
        selection.train(was_training)


class _FrameHeadTerms(nn.Module):
    """Frames (N, 3, P, P) -> each frame's T+K terms of the heads' logits (``SelectionNet.head_terms``)."""

    def __init__(self, selection: SelectionNet, projection: torch.Tensor) -> None:
        super().__init__()
        self.selection = selection
        self.register_buffer("projection", projection)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.selection.image_features(images) @ self.projection


class _HeadsFromTerms(nn.Module):
    """A clip's mean frame terms (B, T+K) -> (frame_probs (B, T), stage_probs (B, K)): bias, sigmoids."""

    def __init__(self, num_frames: int, bias: torch.Tensor) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.register_buffer("bias", bias)

    def forward(self, terms: torch.Tensor):
        probs = torch.sigmoid(terms + self.bias)
        return probs[:, :self.num_frames], probs[:, self.num_frames:]


def split_width(selection: SelectionNet) -> int:
    """Width of what ``policy_features.onnx`` gives per frame (``PolicySplit.num_features``): T + K."""
    return selection.num_frames + selection.num_stages


def head_bias(selection: SelectionNet) -> list[float]:
    """The heads' bias ``c`` of ``SelectionNet.head_terms`` (``PolicySplit.head_bias``): T + K floats."""
    with torch.no_grad():
        return [float(v) for v in selection.head_terms()[1]]


def export_policy_split(model: nn.Module, features_path: PathLike, heads_path: PathLike, policy_size: int,
                        opset: int = 17) -> Tuple[Path, Path]:
    """Write the selection network in two files (``bundle.PolicySplit``).

    ``policy_features.onnx``: ``frames`` (N, 3, P, P) -> ``features`` (N, T+K), N dynamic: each
    frame's terms of the heads' logits (``SelectionNet.head_terms``: the MobileNetV2 features
    projected through the standardisation and both heads);
    ``policy_heads.onnx``: ``features`` (B, T+K) (a clip's mean frame terms) -> ``frame_probs``
    (B, T), ``stage_probs`` (B, K), B dynamic. Both use the running BatchNorm statistics, as every
    export does.
    """
    selection = _selection(model, "export_policy_split")
    was_training = selection.training
    try:
        p = int(policy_size)
        with torch.no_grad():
            projection, bias = selection.head_terms()
        features = _export(_FrameHeadTerms(selection, projection), (torch.zeros(2, 3, p, p),), Path(features_path),
                           [POLICY_INPUT], [POLICY_FEATURES], {POLICY_INPUT: {0: "N"}, POLICY_FEATURES: {0: "N"}},
                           opset)
        heads = _export(_HeadsFromTerms(selection.num_frames, bias), (torch.zeros(2, split_width(selection)),),
                        Path(heads_path),
                        [POLICY_FEATURES], list(POLICY_OUTPUTS),
                        {POLICY_FEATURES: {0: "B"}, **{o: {0: "B"} for o in POLICY_OUTPUTS}}, opset)
        return features, heads
    finally:
        selection.train(was_training)
