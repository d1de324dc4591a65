"""FP32 ONNX -> FP16 ONNX with float32 inputs and outputs, for TensorRT 11's strongly typed builds.

TensorRT 11 has no ``BuilderFlag.FP16``: an engine's precision is the precision of the ONNX graph it
parses. ``convert_to_fp16`` casts every float32 weight and constant to float16, puts a ``Cast`` after
each float32 graph input and before each float32 graph output (so the engine's I/O, the runtime's
buffers and the manifest stay float32), and retypes the float casts and the sub-graphs (``If``
branches) inside. Tensors that the ONNX spec keeps float32 (``Resize``/``Upsample`` scales) are left
alone. ``check_fp16`` runs both files in ONNX Runtime and bounds the difference.

Needs ``onnx`` (and ``onnxruntime`` for the check); no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Set, Union

import numpy as np

PathLike = Union[str, Path]
FP16_MAX = float(np.finfo(np.float16).max)
# (op type, input index) that must stay float32 whatever the graph's precision
FLOAT32_INPUTS = {("Resize", 2), ("Upsample", 1)}
HEAD_POOLS = ("GlobalAveragePool", "ReduceMean")  # the last one starts the float32 head


class Fp16ConversionError(RuntimeError):
    """The FP16 graph disagrees with the FP32 one beyond the tolerance (or is not valid ONNX)."""


def _half_tensor(tensor):
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    return numpy_helper.from_array(np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def _keep_float32(graph) -> Set[str]:
    return {node.input[i] for node in graph.node for op, i in FLOAT32_INPUTS
            if node.op_type == op and len(node.input) > i and node.input[i]}


def _retype(value_info, names_to_keep: Set[str]) -> None:
    from onnx import TensorProto

    for vi in value_info:
        t = vi.type.tensor_type
        if t.elem_type == TensorProto.FLOAT and vi.name not in names_to_keep:
            t.elem_type = TensorProto.FLOAT16


def _convert_nodes_and_weights(graph, keep: Set[str], nodes=None) -> None:
    """Weights, constants, casts and sub-graphs of ``graph`` (or of its ``nodes``) to float16, in place."""
    from onnx import AttributeProto, TensorProto, helper

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            graph.initializer[i].CopyFrom(_half_tensor(init))
    for node in graph.node if nodes is None else nodes:
        if node.op_type == "Constant" and not set(node.output) & keep:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(_half_tensor(attr.t))
                elif attr.name in ("value_float", "value_floats"):
                    values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                    shape = [] if attr.name == "value_float" else [len(values)]
                    tensor = helper.make_tensor("value", TensorProto.FLOAT16, shape,
                                                np.asarray(values, np.float16).astype(np.float32))
                    attr.CopyFrom(helper.make_attribute("value", tensor))
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half_tensor(attr.t))
            elif attr.type == AttributeProto.GRAPH:
                _convert_subgraph(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _convert_subgraph(g)


def _convert_subgraph(graph) -> None:
    keep = _keep_float32(graph)
    _convert_nodes_and_weights(graph, keep)
    for values in (graph.input, graph.output, graph.value_info):
        _retype(values, keep)


def _rename_inputs_of(nodes, renames: Mapping[str, str]) -> None:
    """Point every consumer of a renamed tensor, in ``nodes`` and their sub-graphs (outer scope), at the new name."""
    from onnx import AttributeProto

    if not renames:
        return
    for node in nodes:
        node.input[:] = [renames.get(x, x) for x in node.input]
        for attr in node.attribute:
            for g in ([attr.g] if attr.type == AttributeProto.GRAPH else
                      list(attr.graphs) if attr.type == AttributeProto.GRAPHS else []):
                local = {i.name for i in g.input}
                _rename_inputs_of(g.node, {k: v for k, v in renames.items() if k not in local})


def _float_tensors(model) -> Set[str]:
    """Names of the float32 tensors of the top-level graph (types from ONNX shape inference)."""
    import onnx
    from onnx import TensorProto

    graph = onnx.shape_inference.infer_shapes(model).graph
    names = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            names.add(vi.name)
    return names


def _used_names(nodes) -> Set[str]:
    """Tensor names read by ``nodes``, including outer-scope reads inside their sub-graphs."""
    from onnx import AttributeProto

    used: Set[str] = set()
    for node in nodes:
        used.update(x for x in node.input if x)
        for attr in node.attribute:
            for g in ([attr.g] if attr.type == AttributeProto.GRAPH else
                      list(attr.graphs) if attr.type == AttributeProto.GRAPHS else []):
                used |= _used_names(g.node) - {i.name for i in g.input}
    return used


def _head_start(nodes) -> int:
    """Index of the last pooling node: it and what follows (the heads) stay float32."""
    pools = [i for i, n in enumerate(nodes) if n.op_type in HEAD_POOLS]
    return pools[-1] if pools else len(nodes)


def convert_model_to_fp16(model, head_fp32: bool = True):
    """An FP16 copy of an ONNX ``ModelProto`` whose float32 graph inputs/outputs stay float32.

    With ``head_fp32`` the last pooling node and everything after it (the classifier and policy
    heads, a small share of the FLOPs) stay float32: the selection net standardises its pooled
    features, ``(f - mean) * rsqrt(var)``, which cancels badly in float16.
    """
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer):
        raise Fp16ConversionError(f"graph {graph.name!r} already holds float16 weights; convert the FP32 export")
    floats = _float_tensors(model)
    nodes = list(graph.node)
    start = _head_start(nodes) if head_fp32 else len(nodes)
    body, head = nodes[:start], nodes[start:]
    head_inputs, body_inputs = _used_names(head), _used_names(body)
    weights = {t.name for t in graph.initializer}
    keep = _keep_float32(graph) | ((head_inputs - body_inputs) & weights)  # weights only the head reads
    for n in body:
        if n.op_type == "Constant" and set(n.output) <= head_inputs and not set(n.output) & body_inputs:
            keep.update(n.output)
    _convert_nodes_and_weights(graph, keep, body)
    produced_in_head = {y for n in head for y in n.output}
    graph_inputs = {i.name for i in graph.input}

    renames: Dict[str, str] = {}
    cast_in = []
    for inp in graph.input:
        if inp.name in floats and inp.name not in keep and inp.name in body_inputs:
            renames[inp.name] = f"{inp.name}__fp16"
            cast_in.append(helper.make_node("Cast", [inp.name], [renames[inp.name]], to=TensorProto.FLOAT16,
                                            name=f"{inp.name}__to_fp16"))
    _rename_inputs_of(body, renames)
    to_head = {}  # float16 tensors of the body that the float32 head reads
    for x in sorted(head_inputs - keep - graph_inputs - produced_in_head):
        if x in floats:
            to_head[x] = f"{x}__fp32"
    cast_head = [helper.make_node("Cast", [x], [y], to=TensorProto.FLOAT, name=f"{x}__to_fp32")
                 for x, y in to_head.items()]
    _rename_inputs_of(head, to_head)
    out_renames: Dict[str, str] = {}
    cast_out = []
    for o in graph.output:
        if o.name in floats and o.name not in produced_in_head and o.name not in graph_inputs:
            out_renames[o.name] = f"{o.name}__fp16"
            cast_out.append(helper.make_node("Cast", [out_renames[o.name]], [o.name], to=TensorProto.FLOAT,
                                             name=f"{o.name}__to_fp32"))
    for node in body:
        node.output[:] = [out_renames.get(x, x) for x in node.output]
    _rename_inputs_of(nodes, out_renames)
    del graph.node[:]
    graph.node.extend(cast_in + body + cast_head + head + cast_out)
    del graph.value_info[:]  # optional; stale float32 types would contradict the new graph
    return out


def convert_to_fp16(src: PathLike, dst: PathLike) -> Path:
    """Write the FP16 version of ONNX file ``src`` to ``dst`` (checked with onnx's full checker)."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("FP16 engines on TensorRT 11 are built from an FP16 copy of the ONNX files, which "
                          "needs the onnx package: `pip install onnx` (or `pip install ada3d-edge[trt]`)") from exc

    model = convert_model_to_fp16(onnx.load(str(src)))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Fp16ConversionError(f"{Path(src).name}: the FP16 graph is not valid ONNX ({exc})") from exc
    onnx.save(model, str(dst))
    return Path(dst)


def check_fp16(fp32_path: PathLike, fp16_path: PathLike, feeds: Mapping[str, np.ndarray],
               rtol: float = 0.05) -> float:
    """Run both graphs in ONNX Runtime (CPU) on ``feeds``; return the largest output difference.

    Raises Fp16ConversionError when ``max|fp16 - fp32| > rtol * max(1, max|fp32|)`` for any output.
    """
    import onnxruntime as ort

    def run(path: PathLike) -> list:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, dict(feeds))

    worst = 0.0
    for ref, got in zip(run(fp32_path), run(fp16_path)):
        if got.dtype != ref.dtype or got.shape != ref.shape:
            raise Fp16ConversionError(f"{Path(fp16_path).name}: output {got.dtype}{got.shape} != FP32 "
                                      f"{ref.dtype}{ref.shape}")
        diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        bound = rtol * max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
        if not np.isfinite(diff) or diff > bound:
            raise Fp16ConversionError(f"{Path(fp32_path).name}: FP16 outputs differ from FP32 by {diff:.3g} "
                                      f"> {bound:.3g} ({rtol:g} x max(1, max|output|))")
        worst = max(worst, diff)
    return worst
