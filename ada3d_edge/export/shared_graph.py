"""One ONNX backbone for every stage configuration, from one set of weights (issue 13, layout A).

The network is a chain of segments: the stem, each ResNet stage, the head. For every stage mask
the exporter's ``fold_plan`` fixes, per segment, whether it is degraded and which of its convs run
as folded Conv2d; that pair is the segment's *variant*. Each distinct variant is exported once with
``torch.onnx.export`` (the same tracing as ``onnx_export.export_backbone``), then the pieces are
stitched into one graph: a segment with one variant is inlined, a segment with several becomes an
ONNX ``If`` (nested for more than two) whose branches read the weights from the outer graph.

Inputs ``clip`` (B, 3, T', S, S) float32 and ``stage_mask`` (K,) int64 (0/1 per degradable stage,
stage order, ``1`` = 3D; one mask for the whole batch); output ``logits`` (B, C). The graph turns the
mask into the configuration index (the bit string read as a binary number) and looks each segment's
variant up in a small int64 table, so any fold rule (``--fold auto|all|degraded``) is served.

BatchNorm is folded into every conv before tracing (weights ``W * s``, bias ``beta - mean * s``), so
a conv's weight is the same tensor in every variant; initializers are then deduplicated by content
(renamed ``w.<sha1>``). The same bytes in another shape (a kt=1 conv as 5-D Conv3d and as folded 4-D
Conv2d) become a view ``w.<sha1>@<dims>``; ``save_shared`` / ``save_backbone_files`` write every weight
once, page aligned, and point all views at it (ONNX Runtime memory-maps such external data). A
degraded conv's centre tap ``W[:, :, kt // 2]`` is its own (constant-folded) initializer: 1/kt of
that weight extra. Checkpoints with per-configuration BN statistics (``bn_calibrated``) fold the
shared statistics into the weights and apply, after each BN'd conv, a per-channel scale and shift
gathered from a (2^K, C) table by the configuration index (``per_config_bn``); every segment piece
then also takes ``stage_mask``. Uncalibrated checkpoints keep the plain graph. Run the graph with ``enable_mem_pattern=False`` (ORT keeps
a memory pattern per subgraph and shape otherwise); measurements and choice: docs/shared-weights.md.

``segment_models`` returns the per-variant pieces too: the segment layout (B), one file or engine per
segment variant, chained at run time, is built from the same pieces (``save_segments``).
"""
from __future__ import annotations

import copy
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..bundle import engine_name
from ..models.backbone import Backbone, Bottleneck, Head
from ..models.layers import TemporalConv
from ..models.specs import all_masks
from .onnx_export import check_opset, fold_mode, fold_plan

CLIP_INPUT = "clip"
MASK_INPUT = "stage_mask"
LOGITS_OUTPUT = "logits"
PathLike = Union[str, Path]


class _BiasedTemporalConv(TemporalConv):
    """``TemporalConv`` with the folded BatchNorm as its bias (same 2D/3D and folding rules).

    With per-configuration BN statistics it also holds ``config_scale`` / ``config_shift`` (2^K, C):
    the output is ``y * scale[c] + shift[c]`` for configuration index ``c`` (``config_index``, a 0-d
    int64 tensor set by the segment before each forward), which turns the shared statistics folded
    into the weights into configuration ``c``'s.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("config_scale", None)
        self.register_buffer("config_shift", None)
        self.config_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, degrade: bool = False) -> torch.Tensor:
        y = self._conv(x, degrade)
        if self.config_scale is None:
            return y
        idx = self.config_index.reshape(1)
        shape = (1, -1, 1, 1, 1)
        return (y * torch.index_select(self.config_scale, 0, idx).reshape(shape)
                + torch.index_select(self.config_shift, 0, idx).reshape(shape))

    def _conv(self, x: torch.Tensor, degrade: bool) -> torch.Tensor:
        w = self.effective_weight(degrade)
        kt = w.shape[2]
        if kt == 1 and self.fold_frames:
            b, c, t, h, wd = x.shape
            x2 = x.transpose(1, 2).reshape(b * t, c, h, wd)
            y = F.conv2d(x2, w[:, :, 0], self.bias, self.stride[1:], self.padding[1:])
            return y.reshape(b, t, y.shape[1], y.shape[2], y.shape[3]).transpose(1, 2)
        return F.conv3d(x, w, self.bias, self.stride, (kt // 2,) + tuple(self.padding[1:]))


def config_affine(bn: nn.BatchNorm3d, calibrated: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (2^K, C): what turns BN with the shared statistics into configuration c's.

    With ``s_c = gamma / sqrt(var_c + eps)``: ``BN_c(z) = a_c * BN_ref(z) + b_c``, where
    ``a_c = sqrt((var_ref + eps) / (var_c + eps))`` (> 0, also for gamma = 0) and
    ``b_c = beta * (1 - a_c) + s_c * (mean_ref - mean_c)``. Configurations not calibrated use the
    shared statistics (a = 1, b = 0), as ``Backbone.forward`` does.
    """
    n = calibrated.numel()
    eps = float(bn.eps)
    mean_ref, var_ref = bn.running_mean.double(), bn.running_var.double()
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    mean_c = getattr(bn, "config_mean", mean_ref.expand(n, -1)).double()
    var_c = getattr(bn, "config_var", var_ref.expand(n, -1)).double()
    use = calibrated.view(-1, 1)
    mean_c = torch.where(use, mean_c, mean_ref.expand(n, -1))
    var_c = torch.where(use, var_c, var_ref.expand(n, -1))
    a = torch.sqrt((var_ref + eps) / (var_c + eps))
    s_c = gamma / torch.sqrt(var_c + eps)
    b = beta * (1 - a) + s_c * (mean_ref - mean_c)
    return a.float(), b.float()


def _folded_conv(conv: TemporalConv, bn: nn.BatchNorm3d, calibrated: torch.Tensor | None = None
                 ) -> _BiasedTemporalConv:
    kt, ks = conv.kernel_size[0], conv.kernel_size[1]
    out = _BiasedTemporalConv(conv.in_channels, conv.out_channels, kt, ks, conv.stride[1])
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1, 1))
        out.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        if calibrated is not None:
            a, b = config_affine(bn, calibrated)
            out.config_scale, out.config_shift = a, b
    out.fold_frames = conv.fold_frames
    return out


def per_config_bn(backbone: Backbone) -> bool:
    """True when some configuration has its own calibrated BN statistics (``train/bn_calibration.py``)."""
    return bool(backbone.bn_calibrated.any())


def fold_batchnorm(backbone: Backbone, per_config: bool = False) -> Backbone:
    """An eval-mode copy of ``backbone`` with every BatchNorm folded into the conv in front of it.

    ``per_config``: for a calibrated checkpoint, fold the shared statistics and give each conv the
    (2^K, C) scale/shift tables of ``config_affine``. Without it a calibrated checkpoint raises
    ValueError: one set of folded weights alone cannot serve its configurations.
    """
    if per_config_bn(backbone) and not per_config:
        masks = [format(i, f"0{backbone.num_stages_3d}b") for i in backbone.bn_calibrated.nonzero().flatten().tolist()]
        raise ValueError(f"the backbone has per-configuration BatchNorm statistics (calibrated for {masks}); "
                         "a shared-weight graph needs one set: export per configuration (format 1), or "
                         "see docs/shared-weights.md for the per-configuration affine table")
    folded = copy.deepcopy(backbone).eval()
    pairs = [(folded.stem, "conv", "bn")]
    for m in folded.modules():
        if isinstance(m, Bottleneck):
            pairs += [(m, "conv_a", "bn_a"), (m, "conv_b", "bn_b"), (m, "conv_c", "bn_c")]
            if m.shortcut is not None:
                pairs.append((m.shortcut, "conv", "bn"))
    for owner, conv_name, bn_name in pairs:
        bn = getattr(owner, bn_name)
        if not isinstance(bn, nn.BatchNorm3d):
            raise TypeError(f"expected a BatchNorm3d at {bn_name}, got {type(bn).__name__}")
        calibrated = folded.bn_calibrated.clone() if per_config and per_config_bn(backbone) else None
        setattr(owner, conv_name, _folded_conv(getattr(owner, conv_name), bn, calibrated))
        setattr(owner, bn_name, nn.Identity())
    folded.config_bns = []  # no BN left to switch per configuration
    return folded


def _affine_convs(part: nn.Module) -> List[_BiasedTemporalConv]:
    return [m for m in part.modules() if isinstance(m, _BiasedTemporalConv) and m.config_scale is not None]


class _Segment(nn.Module):
    """One piece of the chain as a module: ``forward(x) -> y``, or ``forward(x, stage_mask) -> y`` for
    a piece with per-configuration BN tables (the configuration index is computed from the mask)."""

    def __init__(self, part: nn.Module, degrade: bool):
        super().__init__()
        self.part, self.degrade = part, degrade

    def forward(self, x: torch.Tensor, stage_mask: torch.Tensor | None = None) -> torch.Tensor:
        convs = _affine_convs(self.part)
        if convs:
            if stage_mask is None:
                raise ValueError("this segment applies per-configuration BN statistics: pass stage_mask")
            k = stage_mask.shape[0]
            pow2 = torch.tensor([2 ** (k - 1 - i) for i in range(k)], dtype=torch.int64)
            index = (stage_mask * pow2).sum()
            for c in convs:
                c.config_index = index
        if isinstance(self.part, Head):
            return self.part(x)
        return self.part(x, self.degrade)


@dataclass
class SegmentVariant:
    """One way a segment runs: degraded or not, and the fold flag of each of its convs."""

    degrade: bool
    folds: Tuple[bool, ...]
    model: object = None  # onnx.ModelProto with input "x", output "y" (weights renamed by content)

    @property
    def key(self) -> Tuple[bool, Tuple[bool, ...]]:
        return self.degrade, self.folds


@dataclass
class Segment:
    """A segment of the chain and, per configuration index, which of its variants runs."""

    name: str
    variants: List[SegmentVariant] = field(default_factory=list)
    choice: List[int] = field(default_factory=list)  # indexed by configuration index (mask as binary)


def _parts(backbone: Backbone) -> List[Tuple[str, nn.Module]]:
    if backbone.temporal_pool is not None:
        raise ValueError(f"arch {backbone.spec.name} with temporal_pool=True cannot be exported "
                         "(its cost is not linear in T'); use temporal_pool=False")
    return [("stem", backbone.stem)] + [(s.name, s) for s in backbone.stages] + [("head", backbone.head)]


def config_index(mask: str) -> int:
    """The configuration index of a bit string (``Backbone.mask_index``): ``'10'`` -> 2."""
    return int(mask, 2) if mask else 0


FoldSpec = Union[bool, str, Mapping[str, str]]  # one fold mode, or a mode per stage mask (``fold_choice``)


def mode_for(fold_frames: FoldSpec, mask: str) -> str:
    """The fold mode ``mask`` is exported with."""
    if isinstance(fold_frames, Mapping):
        if mask not in fold_frames:
            raise ValueError(f"the per-configuration fold modes name no mode for stage mask {mask}")
        return fold_mode(fold_frames[mask])
    return fold_mode(fold_frames)


def segment_plan(backbone: Backbone, fold_frames: FoldSpec = True) -> List[Segment]:
    """Per segment, its distinct variants over all 2^K masks and which one each mask runs.

    ``fold_frames`` may name a mode per mask: variants of different modes that fold the same convs
    are one variant, and every variant reads the same weights, so mixing modes costs no memory."""
    parts = _parts(backbone)
    k = backbone.num_stages_3d
    segments = [Segment(name) for name, _ in parts]
    for seg in segments:
        seg.choice = [-1] * (2 ** k)
    for mask in all_masks(k):
        folds = {id(c): f for c, f, _ in fold_plan(backbone, mask, mode_for(fold_frames, mask))}
        bits = dict(zip(backbone.stage_names, mask))
        for seg, (name, part) in zip(segments, parts):
            convs = [m for m in part.modules() if isinstance(m, TemporalConv)]
            variant = SegmentVariant(bits.get(name) == "0", tuple(folds[id(c)] for c in convs))
            keys = [v.key for v in seg.variants]
            if variant.key not in keys:
                seg.variants.append(variant)
                keys.append(variant.key)
            seg.choice[config_index(mask)] = keys.index(variant.key)
    return segments


def _trace(module: nn.Module, x: torch.Tensor, opset: int, is_head: bool, stage_mask: torch.Tensor | None = None):
    import onnx

    buf = io.BytesIO()
    axes = {"x": {0: "B", 2: "T"}, "y": {0: "B"} if is_head else {0: "B", 2: "T"}}
    args, names = ((x,), ["x"]) if stage_mask is None else ((x, stage_mask), ["x", MASK_INPUT])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=names, output_names=["y"], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


SHARE_ACROSS_RANKS_MIN = 1024  # float tensors this large share storage across shapes (4-D vs 5-D conv weights)


def _content_name(tensor) -> str:
    """``w.<sha1>`` of dtype and bytes; small or non-float tensors hash their shape too.

    A conv with temporal kernel 1 has the same weights as a 5-D Conv3d (O, I, 1, kh, kw) and as a
    folded 4-D Conv2d (O, I, kh, kw): one name, one stored copy, a run-time Reshape for the other.
    """
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    shared = arr.dtype.kind == "f" and arr.size >= SHARE_ACROSS_RANKS_MIN
    key = str(arr.dtype).encode() + (b"" if shared else str(arr.shape).encode()) + arr.tobytes()
    return f"w.{hashlib.sha1(key).hexdigest()[:20]}"


def segment_models(backbone: Backbone, crop: int, opset: int = 17, fold_frames: FoldSpec = True,
                   num_frames: int | None = None) -> List[Segment]:
    """``segment_plan`` with every variant traced to ONNX (input ``x``, output ``y``).

    Initializers are renamed by content (``w.<sha1>``), so equal weights carry equal names across
    variants: the stitched graph keeps one copy, a segment runtime can share one ``OrtValue``.
    Checkpoints with per-configuration BN statistics get the scale/shift tables (``fold_batchnorm``
    with ``per_config``); their pieces with BN'd convs take ``stage_mask`` as a second input.
    """
    opset = check_opset(opset)
    folded = fold_batchnorm(backbone, per_config=True)
    segments = segment_plan(folded, fold_frames)
    t = int(num_frames or backbone.spec.num_frames)
    x = torch.zeros(1, 3, t, crop, crop)
    mask = torch.ones(backbone.num_stages_3d, dtype=torch.int64)
    parts = _parts(folded)
    for seg, (name, part) in zip(segments, parts):
        convs = [m for m in part.modules() if isinstance(m, TemporalConv)]
        is_head = name == "head"
        seg_mask = mask if _affine_convs(part) else None
        for variant in seg.variants:
            for c, f in zip(convs, variant.folds):
                c.fold_frames = f
            variant.model = _rename_initializers(_trace(_Segment(part, variant.degrade), x, opset, is_head,
                                                        seg_mask))
        with torch.no_grad():
            x = _Segment(part, False)(x, seg_mask)
    return segments


def _rename_initializers(model):
    renames = {}
    for init in model.graph.initializer:
        new = _content_name(init)
        renames[init.name] = new
        init.name = new
    for node in _all_nodes(model.graph):
        node.input[:] = [renames.get(i, i) for i in node.input]
    return model


def _subgraphs(node):
    """The graph attributes of ``node`` (an ``If``'s two branches)."""
    return [attr.g for attr in node.attribute if attr.g is not None and attr.g.node]


def _graphs(graph):
    """``graph`` and every subgraph under it."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _graphs(sub)


def _all_nodes_of(nodes):
    """``nodes`` and every node of their subgraphs."""
    for node in nodes:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _all_nodes(graph):
    for g in _graphs(graph):
        yield from g.node


class _Stitcher:
    """Builds the outer graph: one stored copy per weight, run-time Reshapes where ranks differ."""

    def __init__(self, segments: Sequence[Segment]):
        from onnx import numpy_helper

        self.weights: Dict[str, object] = {}
        for seg in segments:  # the canonical copy of a shared weight is its lowest-rank shape
            for variant in seg.variants:
                for init in variant.model.graph.initializer:
                    have = self.weights.get(init.name)
                    if have is None or len(init.dims) < len(have.dims):
                        self.weights[init.name] = init
        self.nodes: list = []
        self.np = numpy_helper

    def constant(self, name: str, value: np.ndarray) -> str:
        self.weights[name] = self.np.from_array(value, name)
        return name

    def view(self, name: str, dims: Tuple[int, ...]) -> str:
        """An initializer ``<name>@<dims>``: the same bytes as ``name`` in another shape.

        In memory it is a copy; ``save_shared`` writes the bytes once and points both at them (ORT
        memory-maps page-aligned external data, so both map the same pages). No run-time Reshape:
        ORT copies a Reshape of an initializer on every run.
        """
        alias = f"{name}@{'x'.join(map(str, dims))}"
        if alias not in self.weights:
            self.weights[alias] = self.np.from_array(self.np.to_array(self.weights[name]).reshape(dims), alias)
        return alias

    def inline(self, model, prefix: str, x_name: str, y_name: str) -> list:
        """The nodes of a variant with its values renamed into the outer graph (``x``/``y`` mapped)."""
        from onnx import helper

        own = {init.name: tuple(init.dims) for init in model.graph.initializer}
        nodes = []

        def rename(v: str) -> str:
            if not v:
                return v
            if v in own:
                dims = own[v]
                return v if tuple(self.weights[v].dims) == dims else self.view(v, dims)
            return {"x": x_name, "y": y_name, MASK_INPUT: MASK_INPUT}.get(v, f"{prefix}/{v}")

        for node in model.graph.node:
            n = copy.deepcopy(node)
            n.name = f"{prefix}/{node.name}"
            n.input[:] = [rename(i) for i in node.input]
            n.output[:] = [rename(o) for o in node.output]
            nodes.append(n)
        return nodes

    def switch(self, seg: Segment, index_name: str, x_name: str, y_name: str, rank: int) -> list:
        """Nodes choosing ``seg``'s variant from the configuration index: Gather a table, then Ifs."""
        from onnx import TensorProto, helper

        table = self.constant(f"{seg.name}/variant_table", np.asarray(seg.choice, np.int64))
        variant = f"{seg.name}/variant"
        nodes = [helper.make_node("Gather", [table, index_name], [variant], name=variant)]

        def graph(body: list, name: str, out: str):
            return helper.make_graph(body, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                                   [None] * rank)])

        def chain(i: int, out: str) -> list:
            body = self.inline(seg.variants[i].model, f"{seg.name}/v{i}", x_name, out if i == len(seg.variants) - 1
                               else f"{seg.name}/v{i}/y")
            if i == len(seg.variants) - 1:
                return body
            cond = f"{seg.name}/is{i}"
            const = self.constant(cond + "/k", np.asarray(i, np.int64))
            rest_out = f"{seg.name}/after{i}/y"
            return [helper.make_node("Equal", [variant, const], [cond], name=cond),
                    helper.make_node("If", [cond], [out], name=f"{seg.name}/if{i}",
                                     then_branch=graph(body, f"{seg.name}_v{i}", f"{seg.name}/v{i}/y"),
                                     else_branch=graph(chain(i + 1, rest_out), f"{seg.name}_after{i}", rest_out))]

        return nodes + chain(0, y_name)


def stitch(segments: Sequence[Segment], num_stages: int, num_classes: int, crop: int, opset: int = 17,
           mask: str | None = None):
    """One ``onnx.ModelProto`` serving every configuration: inputs ``clip`` and ``stage_mask``.

    ``mask``: instead, the flat graph of that one configuration (each segment's variant inlined, no
    ``If``; the ``configs`` layout, see ``config_graphs``). It takes ``stage_mask`` only when its
    pieces apply per-configuration BN statistics.
    """
    import onnx
    from onnx import TensorProto, helper

    k = int(num_stages)
    if mask is not None:
        index = config_index(mask)
        segments = [Segment(seg.name, [seg.variants[seg.choice[index]]], [0] * (2 ** k)) for seg in segments]
    st = _Stitcher(segments)
    if mask is None:
        pow2 = st.constant("config/pow2", np.asarray([2 ** (k - 1 - i) for i in range(k)], np.int64))
        st.nodes += [helper.make_node("Mul", [MASK_INPUT, pow2], ["config/weighted"], name="config/weighted"),
                     helper.make_node("ReduceSum", ["config/weighted"], ["config/index"], keepdims=0,
                                      name="config/index")]
    body, x = [], CLIP_INPUT
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        y = LOGITS_OUTPUT if last else f"{seg.name}/out"
        if len(seg.variants) == 1:
            body += st.inline(seg.variants[0].model, f"{seg.name}/v0", x, y)
        else:
            body += st.switch(seg, "config/index", x, y, 2 if last else 5)
        x = y
    inputs = [helper.make_tensor_value_info(CLIP_INPUT, TensorProto.FLOAT, ["B", 3, "T", crop, crop])]
    if mask is None or any(MASK_INPUT in n.input for n in _all_nodes_of(body)):
        inputs.append(helper.make_tensor_value_info(MASK_INPUT, TensorProto.INT64, [k]))
    graph = helper.make_graph(
        st.nodes + body, "ada3d_backbone_shared" if mask is None else f"ada3d_backbone_{mask}", inputs,
        [helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["B", int(num_classes)])],
        initializer=list(st.weights.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", check_opset(opset))],
                              producer_name="ada3d_edge.shared_graph")
    model.ir_version = segments[0].variants[0].model.ir_version
    onnx.checker.check_model(model)
    return model


def config_graphs(segments: Sequence[Segment], num_stages: int, num_classes: int, crop: int,
                  opset: int = 17) -> Dict[str, object]:
    """Stage mask -> the flat graph of that configuration (``stitch(..., mask=...)``).

    Written against the same weights file as the one graph (``save_backbone_files``), they cost no
    disk; each loaded as its own ONNX Runtime session, they run without ``If`` and with the NCHWc
    rewrite everywhere (format-1 speed), at the price of the private blocked copies of their 2D
    weights: the ``configs`` layout, chosen at export when memory allows (``layout_measure``).
    """
    return {m: stitch(segments, num_stages, num_classes, crop, opset, mask=m) for m in all_masks(num_stages)}


# Share of the backbone's weight bytes whose segments keep their weights inside their If branches
# (``localize_weights``): ORT's NCHWc rewrite then runs there, at the price of private copies. The
# smallest segments go first (the stem and early stages: small weights, the largest activations).
# slow_r50 @224: 0.10 localises stem, res2 and res3, 1.18x of Upper's PSS instead of 1.15x, and the
# degraded configurations run at their format-1 speed (docs/shared-weights.md section 9).
LOCAL_WEIGHTS_BUDGET = 0.10


def _reads(graph) -> set:
    """Names read by the nodes of ``graph`` and of its subgraphs."""
    return {i for n in _all_nodes(graph) for i in n.input if i}


def segment_weight_bytes(model) -> Dict[str, int]:
    """Bytes of the outer-scope weights each ``If`` segment (``<segment>/if0``) reads."""
    sizes = {init.name: tensor_bytes(init) for init in model.graph.initializer}
    out: Dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "If":
            names = set().union(*(_reads(sub) for sub in _subgraphs(node))) & sizes.keys()
            seg = node.name.split("/", 1)[0]
            out[seg] = out.get(seg, 0) + sum(sizes[n] for n in names)
    return out


def tensor_bytes(init) -> int:
    from onnx import helper

    n = int(np.prod(init.dims)) if len(init.dims) else 1
    return n * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize


def segments_within_budget(model, budget: float) -> List[str]:
    """The ``If`` segments to localise: smallest first, while their weights stay within ``budget``
    of all the graph's weight bytes (0: none, 1: all)."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"local weights budget must be in [0, 1], got {budget}")
    total = sum(tensor_bytes(i) for i in model.graph.initializer)
    chosen, used = [], 0
    for seg, size in sorted(segment_weight_bytes(model).items(), key=lambda kv: (kv[1], kv[0])):
        if used + size > budget * total:
            break
        chosen.append(seg)
        used += size
    return chosen


def localize_weights(model, segments: Sequence[str]):
    """Give every branch graph of the named ``If`` segments its own copy of the weights its nodes read.

    ORT's NCHWc layout pass looks a conv's weight up in the conv's own graph only, so in a branch
    that reads its weights from the outer scope the pass never runs (a folded Conv2d then runs up to
    1.2x slower at full size). Local initializers still point at the same bytes of the weights file
    (``SharedWeightsFile``), so the disk size does not change; in memory ORT keeps a private copy.
    Main-graph weights that no remaining graph reads from the outer scope are dropped. Returns ``model``.
    """
    import copy as _copy

    g = model.graph
    inits = {init.name: init for init in g.initializer}
    wanted, localised = set(segments), []
    for node in g.node:
        if node.op_type == "If" and node.name.split("/", 1)[0] in wanted:
            localised.append(node)
            for sub in _subgraphs(node):
                for graph in _graphs(sub):
                    own = {i.name for i in graph.initializer}
                    for name in sorted({i for n in graph.node for i in n.input if i} & inits.keys() - own):
                        graph.initializer.append(_copy.deepcopy(inits[name]))
    still = {i for n in g.node for i in n.input if i}
    for node in g.node:
        if not any(node is n for n in localised):
            for sub in _subgraphs(node):
                still |= _reads(sub)
    keep = [init for init in g.initializer if init.name in still]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def build_shared_backbone(backbone: Backbone, crop: int, opset: int = 17, fold_frames: FoldSpec = True,
                          num_frames: int | None = None, local_budget: float | None = None):
    """``(model, segments)``: the stitched ``onnx.ModelProto`` and the traced segment variants.

    The ``If`` segments chosen by ``segments_within_budget(model, local_budget)`` hold their weights
    in their branches (``localize_weights``; None = ``LOCAL_WEIGHTS_BUDGET``); the model's
    ``metadata_props`` name them.
    """
    import onnx

    segments = segment_models(backbone, crop, opset, fold_frames, num_frames)
    model = stitch(segments, backbone.num_stages_3d, backbone.num_classes, crop, opset)
    local = segments_within_budget(model, LOCAL_WEIGHTS_BUDGET if local_budget is None else local_budget)
    if local:
        localize_weights(model, local)
        onnx.checker.check_model(model)
    entry = model.metadata_props.add()
    entry.key, entry.value = "local_weights", ",".join(local)
    return model, segments


def local_weight_segments(model) -> List[str]:
    """The segments whose branches hold their own weights (``build_shared_backbone``)."""
    for entry in model.metadata_props:
        if entry.key == "local_weights":
            return [s for s in entry.value.split(",") if s]
    return []


PAGE = 4096  # ORT memory-maps external data whose offset is a multiple of the page size (Linux)
ALIGN_MIN_BYTES = 64 * 1024  # smaller tensors are packed unaligned (ORT copies them; padding would cost more)
EXTERNAL_MIN_BYTES = 1024


class SharedWeightsFile:
    """One external-data file holding every weight once; any number of graphs point into it.

    Initializers named ``<name>@<dims>`` are views of ``<name>``: same offset, same length. Offsets
    of tensors from ``ALIGN_MIN_BYTES`` up are page aligned, so ONNX Runtime maps the file instead of
    copying it (and the pages are shared by every mapping, in this process and in others).
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.offsets: Dict[str, Tuple[int, int]] = {}
        self._f = self.path.open("wb")

    def externalise(self, model) -> None:
        """Point ``model``'s large initializers at this file, writing bytes not written yet."""
        from onnx import numpy_helper
        from onnx.external_data_helper import set_external_data

        for init in (i for graph in _graphs(model.graph) for i in graph.initializer):  # branch-local ones too
            data = init.raw_data or numpy_helper.to_array(init).tobytes()
            if len(data) < EXTERNAL_MIN_BYTES:
                continue
            key = init.name.split("@", 1)[0]
            if key not in self.offsets:
                pos = self._f.tell()
                pad = (-pos) % PAGE if len(data) >= ALIGN_MIN_BYTES else 0
                self._f.write(b"\0" * pad)
                self.offsets[key] = (pos + pad, len(data))
                self._f.write(data)
            offset, length = self.offsets[key]
            if length != len(data):
                raise ValueError(f"initializer {init.name}: {len(data)} bytes, but {key} has {length}")
            for f in ("float_data", "int64_data", "int32_data", "double_data"):
                init.ClearField(f)
            init.raw_data = data  # set_external_data wants it present
            set_external_data(init, self.path.name, offset, length)
            init.ClearField("raw_data")
            init.data_location = init.EXTERNAL

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "SharedWeightsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _externalised_copy(model, wf: SharedWeightsFile):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    wf.externalise(m)
    return m


def save_shared(model, path: PathLike, weights_name: str | None = None) -> Tuple[Path, Path]:
    """Write ``model`` to ``path`` with its weights in ``<path stem>.weights`` beside it (each once)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_name(weights_name or f"{path.stem}.weights")
    with SharedWeightsFile(weights) as wf:
        onnx.save(_externalised_copy(model, wf), str(path))
    return path, weights


def _write_segments(segments: Sequence[Segment], out: Path, wf: SharedWeightsFile) -> Dict[str, List[str]]:
    import onnx

    shapes: Dict[str, Tuple[int, ...]] = {}
    files: Dict[str, List[str]] = {}
    for seg in segments:
        files[seg.name] = []
        for i, v in enumerate(seg.variants):
            m = onnx.ModelProto()
            m.CopyFrom(v.model)
            renames = {}
            for init in m.graph.initializer:
                dims = tuple(init.dims)
                if shapes.setdefault(init.name, dims) != dims:  # same bytes, other shape: a view
                    renames[init.name] = init.name + "@" + "x".join(map(str, dims))
                    init.name = renames[init.name]
            for node in m.graph.node:
                node.input[:] = [renames.get(x, x) for x in node.input]
            wf.externalise(m)
            name = f"{seg.name}_v{i}.onnx"
            onnx.save(m, str(out / name))
            files[seg.name].append(name)
    return files


def save_segments(segments: Sequence[Segment], out_dir: PathLike,
                  weights_name: str = "segments.weights") -> Dict[str, List[str]]:
    """Layout B: one ONNX file per segment variant (``<segment>_v<i>.onnx``), all weights in one file.

    A variant whose weight has another shape than the first one stored gets a ``<name>@<dims>`` view.
    Returns segment name -> its variant files, in variant order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with SharedWeightsFile(out / weights_name) as wf:
        return _write_segments(segments, out, wf)


def save_backbone_files(model, segments: Sequence[Segment], out_dir: PathLike,
                        graph_name: str = "backbone_shared.onnx",
                        weights_name: str = "backbone.weights",
                        configs: Mapping[str, object] | None = None) -> Dict[str, object]:
    """Every layout against ONE weights file: the ``If`` graph (ONNX Runtime), the segment files
    (TensorRT engines, one per variant) and, given ``configs`` (mask -> flat graph, ``config_graphs``),
    one flat graph per configuration, all in ``out_dir``. Returns the file names and the per-segment
    choice tables (configuration index -> variant), the data a manifest needs."""
    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_files: Dict[str, Dict[str, object]] = {}
    with SharedWeightsFile(out / weights_name) as wf:
        onnx.save(_externalised_copy(model, wf), str(out / graph_name))
        files = _write_segments(segments, out, wf)
        for mask, flat in (configs or {}).items():
            name = f"{engine_name(mask)}.onnx"
            onnx.save(_externalised_copy(flat, wf), str(out / name))
            config_files[mask] = {"file": name, "inputs": [i.name for i in flat.graph.input]}
    return {"graph": graph_name, "weights": weights_name, "configs": config_files,
            "per_config_bn": any(len(v.model.graph.input) > 1 for s in segments for v in s.variants),
            "segments": [{"name": s.name, "choice": list(s.choice), "files": files[s.name],
                          "degraded": [bool(v.degrade) for v in s.variants],
                          "inputs": [[i.name for i in v.model.graph.input] for v in s.variants]}
                         for s in segments]}


def export_shared_backbone(backbone: Backbone, path: PathLike, crop: int, opset: int = 17,
                           fold_frames: FoldSpec = True, num_frames: int | None = None) -> Path:
    """Write the one-graph backbone (``clip``, ``stage_mask`` -> ``logits``) to ``path``.

    Its weights go to ``<path stem>.weights`` beside it (external data, each weight once, page
    aligned); returns ``path``.
    """
    model, _ = build_shared_backbone(backbone, crop, opset, fold_frames, num_frames)
    return save_shared(model, path)[0]


def mask_array(mask: str) -> np.ndarray:
    """The ``stage_mask`` input for a bit string: ``'10'`` -> ``array([1, 0])`` (int64)."""
    return np.asarray([int(c) for c in mask], np.int64)


def initializer_bytes(model) -> int:
    """Bytes of the distinct initializers of a model (views ``<name>@<dims>`` counted once)."""
    seen: Dict[str, int] = {}
    for t in model.graph.initializer:
        seen.setdefault(t.name.split("@", 1)[0], tensor_bytes(t))
    return sum(seen.values())
