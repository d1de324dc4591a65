"""TensorRT backend (TensorRT 10/11 tensor-name API + cuda-python).

``tensorrt`` and ``cuda-python`` are imported only when a ``TrtBackend`` is created (helpers in
``ada3d_edge/trt_api.py``, shared with the engine builder), so this module imports anywhere.

A plan file only runs on the TensorRT version and GPU model that built it; the manifest records
both (``tensorrt_version``, ``gpu_name``) and ``load`` refuses a mismatch before deserializing.

Bundle format 2 (docs/shared-weights.md section 7): the backbone is one engine per segment variant,
loaded with ``meta["model"] == "segment"`` (no I/O buffers of their own), and registered as one
``SegmentChain`` model (``add_chain``). A configuration runs its segments' engines one after another
on one CUDA stream, each reading one of two device ping-pong buffers and writing the other; the
clip is copied to the device before the first piece and the logits back after the last, nothing
in between. Every context is created with the user-managed allocation strategy and shares one
scratch buffer, the size of the largest engine's ``device_memory_size_v2``: the pieces never run
at the same time. Unverified on a GPU (none lent); tested against fakes of TensorRT 10 and 11.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_NAME, BACKBONE_OUTPUT, Bundle,
                       TrtEngineEntry, segment_model_name)
from ...trt_api import (cuda_call as _cuda_call, engine_scratch_bytes, import_cudart, import_tensorrt,
                        parse_cuda_device, running_gpu_name, set_context_scratch, user_managed_context)
from ..loading import load_first_usable_plan
from .base import Backend, EngineMismatchError, check_inputs

SEGMENT_MODEL = "segment"  # TrtEngineEntry.model of a segment variant's plan


def check_engine_compat(meta: Mapping[str, Any], tensorrt_version: str, gpu_name: str) -> None:
    """Refuse a plan whose manifest entry names another TensorRT version or GPU.

    Fields absent from ``meta`` are not checked (a plan loaded without its manifest entry).
    """
    file = meta.get("file", "engine")
    built_version = meta.get("tensorrt_version")
    built_gpu = meta.get("gpu_name")
    reasons = []
    if built_version is not None and str(built_version) != str(tensorrt_version):
        reasons.append(f"built with TensorRT {built_version}, this is TensorRT {tensorrt_version}")
    if built_gpu is not None and str(built_gpu).strip() != str(gpu_name).strip():
        reasons.append(f"built on GPU {built_gpu!r}, this GPU is {gpu_name!r}")
    if reasons:
        raise EngineMismatchError(
            f"refusing {file}: {'; '.join(reasons)}. TensorRT plans only run where they were built: "
            "run `ada3d build-engines BUNDLE` on this device, or use the 'ort' backend"
        )


@dataclass
class _Buffer:
    """A host/device pair for one I/O tensor, sized for its largest shape."""

    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]
    nbytes: int
    host_ptr: int
    device_ptr: int
    host: np.ndarray  # flat view of the pinned host memory


@dataclass
class _Loaded:
    """One deserialized plan: its context, I/O names, dtypes and largest shapes (profile 0)."""

    engine: Any
    context: Any
    inputs: list[str]
    outputs: list[str]
    dtypes: dict[str, np.dtype]
    max_shapes: dict[str, tuple[int, ...]]
    scratch_bytes: int
    segment: bool = False  # a chain piece: bound to the chain's ping-pong buffers, no buffers of its own
    buffers: dict[str, _Buffer] = field(default_factory=dict)

    def max_bytes(self, name: str) -> int:
        return int(np.prod(self.max_shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize


@dataclass(frozen=True)
class SegmentChain:
    """The backbone as a chain of segment engines (bundle format 2, layout B).

    ``segments``: per segment, (name, choice, variant model names); configuration ``mask`` runs
    ``variants[choice[int(mask, 2)]]`` of every segment, in order. Run as a model taking ``clip`` and
    ``stage_mask`` (K,) (one configuration for the whole batch), like the ONNX ``If`` graph.
    """

    segments: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...]

    @property
    def num_stages(self) -> int:
        return (len(self.segments[0][1]) - 1).bit_length()

    def config_index(self, stage_mask: Any) -> int:
        """``stage_mask``: a bit string ("10") or K ints (1 = 3D) -> configuration index."""
        bits = stage_mask if isinstance(stage_mask, str) else "".join(str(int(b)) for b in np.ravel(stage_mask))
        if len(bits) != self.num_stages or set(bits) - {"0", "1"}:
            raise ValueError(f"stage_mask {stage_mask!r}: expected {self.num_stages} values of 0/1")
        return int(bits, 2)

    def pieces(self, index: int) -> list[str]:
        """Model names of the engines configuration ``index`` runs, in order."""
        return [variants[choice[index]] for _, choice, variants in self.segments]

    def models(self) -> list[str]:
        return [v for _, _, variants in self.segments for v in variants]


class TrtBackend(Backend):
    """Runs TensorRT plans: one execution context per model, one scratch buffer for all of them.

    Whole models (the policy) get their own I/O buffers; segment chains share two ping-pong buffers.
    """

    kind = "trt"
    file_kind = "plan"

    def __init__(self, device: str = "cuda", log_level: str = "WARNING") -> None:
        super().__init__()
        self.device_index = parse_cuda_device(device)
        self._trt = import_tensorrt()
        self._cudart = import_cudart()
        _cuda_call(self._cudart.cudaSetDevice(self.device_index))
        self._logger = self._trt.Logger(getattr(self._trt.Logger, log_level))
        self._runtime = self._trt.Runtime(self._logger)
        self._stream = _cuda_call(self._cudart.cudaStreamCreate())
        self._models: dict[str, _Loaded] = {}
        self._chains: dict[str, SegmentChain] = {}
        self._scratch = (0, 0)  # (device pointer, bytes), shared by every context
        self._ping: list[int] = []  # two device buffers of self._ping_bytes each
        self._ping_bytes = 0
        self._host_in: _Buffer | None = None  # pinned staging for a chain's input and output
        self._host_out: _Buffer | None = None
        self._peak_used = 0
        self.tensorrt_version = str(self._trt.__version__)
        self.gpu_name = running_gpu_name(self._cudart, self.device_index)

    # -- loading --------------------------------------------------------------------------------
    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        check_engine_compat({"file": path.name, **meta}, self.tensorrt_version, self.gpu_name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TensorRT plan for {name!r} not found; run `ada3d build-engines`")
        trt = self._trt
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path} (see the log above); "
                               "rebuild it with `ada3d build-engines` on this device")
        context = user_managed_context(trt, engine)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        segment = meta.get("model") == SEGMENT_MODEL
        if segment and (len(inputs), len(outputs)) != (1, 1):
            raise RuntimeError(f"{path}: a segment engine has one input and one output, this one has "
                               f"{inputs} -> {outputs}; rebuild it with `ada3d build-engines`")
        max_shapes: dict[str, tuple[int, ...]] = {}
        for n in inputs:  # largest shape of optimization profile 0, set so outputs resolve
            shape = tuple(engine.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                shape = tuple(engine.get_tensor_profile_shape(n, 0)[2])
            max_shapes[n] = shape
            context.set_input_shape(n, shape)
        for n in outputs:
            shape = tuple(context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{path}: output {n!r} has unresolved shape {shape}")
            max_shapes[n] = shape
        dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        model = _Loaded(engine, context, inputs, outputs, dtypes, max_shapes, engine_scratch_bytes(engine), segment)
        if name in self._models:
            self._free(self._models.pop(name))
        if not segment:
            for n in names:
                model.buffers[n] = self._allocate(n, n in inputs, dtypes[n], max_shapes[n])
                context.set_tensor_address(n, model.buffers[n].device_ptr)
        self._models[name] = model
        self._share_scratch()
        self._sample_memory()

    def _share_scratch(self) -> None:
        """One scratch buffer of the largest need, set on every context (grown when a bigger engine loads)."""
        need = max((m.scratch_bytes for m in self._models.values()), default=0)
        ptr, size = self._scratch
        if need > size:
            if ptr:
                self._cudart.cudaFree(ptr)
            ptr, size = int(_cuda_call(self._cudart.cudaMalloc(need))), need
            self._scratch = (ptr, size)
        for m in self._models.values():
            set_context_scratch(m.context, ptr, size)

    def load_bundle_backbone(self, bundle: Bundle) -> TrtEngineEntry:
        """Load the plan of every segment variant of ``bundle`` and chain them as model ``backbone``.

        Each variant takes the first of its plans built for this TensorRT version and GPU. Returns
        the loaded entry with the smallest ``max_batch`` (the chain's limit).
        """
        table, loaded = [], []
        for seg in bundle.manifest.backbone.segments:
            names = [segment_model_name(seg.name, v) for v in range(len(seg.variants))]
            loaded += [load_first_usable_plan(self, bundle, name, name, "segment") for name in names]
            table.append((seg.name, seg.choice, names))
        self.add_chain(BACKBONE_NAME, table)
        return min(loaded, key=lambda e: e.max_batch)

    def add_chain(self, name: str, segments: Sequence[tuple[str, Sequence[int], Sequence[str]]]) -> SegmentChain:
        """Register the segment engines already loaded as one model ``name`` (see ``SegmentChain``)."""
        chain = SegmentChain(tuple((str(s), tuple(int(c) for c in choice), tuple(variants))
                                   for s, choice, variants in segments))
        if not chain.segments:
            raise ValueError(f"chain {name!r} has no segments")
        for v in chain.models():
            if v not in self._models or not self._models[v].segment:
                raise KeyError(f"chain {name!r}: segment engine {v!r} is not loaded as a segment")
        for (a, _, outs), (b, _, ins) in zip(chain.segments, chain.segments[1:]):
            out_types = {self._models[v].dtypes[self._models[v].outputs[0]] for v in outs}
            in_types = {self._models[v].dtypes[self._models[v].inputs[0]] for v in ins}
            if len(out_types | in_types) != 1:
                raise RuntimeError(f"chain {name!r}: {a} outputs {sorted(map(str, out_types))} but {b} takes "
                                   f"{sorted(map(str, in_types))}; rebuild the engines with `ada3d build-engines`")
        pieces = [self._models[v] for v in chain.models()]
        boundary = max(max(m.max_bytes(m.inputs[0]), m.max_bytes(m.outputs[0])) for m in pieces)
        if boundary > self._ping_bytes:
            for ptr in self._ping:
                self._cudart.cudaFree(ptr)
            self._ping = [int(_cuda_call(self._cudart.cudaMalloc(boundary))) for _ in range(2)]
            self._ping_bytes = boundary
        first = [self._models[v] for v in chain.segments[0][2]]
        last = [self._models[v] for v in chain.segments[-1][2]]
        self._host_in = self._grow_host(self._host_in, BACKBONE_INPUT, first, input_side=True)
        self._host_out = self._grow_host(self._host_out, BACKBONE_OUTPUT, last, input_side=False)
        self._chains[name] = chain
        self._sample_memory()
        return chain

    def _grow_host(self, buf: _Buffer | None, label: str, models: list[_Loaded], input_side: bool) -> _Buffer:
        tensors = [(m, m.inputs[0] if input_side else m.outputs[0]) for m in models]
        nbytes = max(m.max_bytes(n) for m, n in tensors)
        m, n = max(tensors, key=lambda t: t[0].max_bytes(t[1]))
        if buf is not None and buf.nbytes >= nbytes:
            return buf
        if buf is not None:
            self._cudart.cudaFreeHost(buf.host_ptr)
        host_ptr = int(_cuda_call(self._cudart.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
        dtype = m.dtypes[n]
        return _Buffer(label, input_side, dtype, m.max_shapes[n], nbytes, host_ptr, 0,
                       np.frombuffer(raw, dtype=np.uint8).view(dtype))

    def _allocate(self, name: str, is_input: bool, dtype: np.dtype, shape: tuple[int, ...]) -> _Buffer:
        size = int(np.prod(shape, dtype=np.int64))
        nbytes = max(size * dtype.itemsize, 1)
        host_ptr = int(_cuda_call(self._cudart.cudaMallocHost(nbytes)))
        device_ptr = int(_cuda_call(self._cudart.cudaMalloc(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
        host = np.frombuffer(raw, dtype=np.uint8)[: size * dtype.itemsize].view(dtype)
        return _Buffer(name, is_input, dtype, shape, nbytes, host_ptr, device_ptr, host)

    # -- running --------------------------------------------------------------------------------
    def _resolve_chain(self, name: str, inputs: Mapping[str, np.ndarray]) -> tuple[SegmentChain, int] | None:
        """(chain, configuration index) for ``backbone`` + stage_mask, or ``backbone_<mask>``; else None."""
        if name in self._chains:
            check_inputs(name, [BACKBONE_INPUT, BACKBONE_MASK_INPUT], inputs)
            chain = self._chains[name]
            return chain, chain.config_index(inputs[BACKBONE_MASK_INPUT])
        base, _, mask = name.rpartition("_")
        if base in self._chains and mask and not set(mask) - {"0", "1"}:
            check_inputs(name, [BACKBONE_INPUT], inputs)
            chain = self._chains[base]
            return chain, chain.config_index(mask)
        return None

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        resolved = self._resolve_chain(name, inputs)
        if resolved is not None:
            return self._run_chain(name, *resolved, inputs[BACKBONE_INPUT])
        model = self._models.get(name)
        if model is None or model.segment:
            self._require(name)
        check_inputs(name, model.inputs, inputs)
        h2d = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in model.inputs:
            buf = model.buffers[n]
            arr = np.ascontiguousarray(inputs[n], dtype=buf.dtype)
            if arr.nbytes > buf.nbytes:
                raise ValueError(
                    f"input {n!r} of {name!r} has shape {arr.shape} ({arr.nbytes} bytes) but its buffer holds "
                    f"{buf.nbytes} bytes (max shape {buf.max_shape}); lower the batch or rebuild the engine "
                    "with a larger max batch"
                )
            if not model.context.set_input_shape(n, arr.shape):
                raise ValueError(f"input {n!r} of {name!r}: shape {arr.shape} is outside the engine's "
                                 f"optimization profile (max {buf.max_shape})")
            buf.host[: arr.size] = arr.reshape(-1)
            _cuda_call(self._cudart.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, arr.nbytes, h2d, self._stream))
        if not model.context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"TensorRT execution of {name!r} failed (see the log above)")
        shapes = {}
        for n in model.outputs:
            buf = model.buffers[n]
            shape = tuple(model.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape, dtype=np.int64)) * buf.dtype.itemsize
            if nbytes > buf.nbytes:
                raise RuntimeError(f"output {n!r} of {name!r} needs {nbytes} bytes, its buffer holds {buf.nbytes}")
            shapes[n] = shape
            _cuda_call(self._cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, nbytes, d2h, self._stream))
        _cuda_call(self._cudart.cudaStreamSynchronize(self._stream))
        self._sample_memory()
        out = {}
        for n, shape in shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            out[n] = model.buffers[n].host[:size].reshape(shape).astype(np.float32, copy=True)
        return out

    def _run_chain(self, name: str, chain: SegmentChain, index: int, clip: np.ndarray) -> dict[str, np.ndarray]:
        """One configuration: clip -> ping[0], piece i reads ping[i % 2] and writes ping[(i + 1) % 2]."""
        pieces = [self._models[p] for p in chain.pieces(index)]
        host_in, host_out = self._host_in, self._host_out
        arr = np.ascontiguousarray(clip, dtype=pieces[0].dtypes[pieces[0].inputs[0]])
        if arr.nbytes > host_in.nbytes:
            raise ValueError(f"input {BACKBONE_INPUT!r} of {name!r} has shape {arr.shape} ({arr.nbytes} bytes) but "
                             f"its buffer holds {host_in.nbytes} bytes (max shape {host_in.max_shape}); lower the "
                             "batch or rebuild the engines with a larger max batch")
        host_in.host[: arr.size] = arr.reshape(-1)
        _cuda_call(self._cudart.cudaMemcpyAsync(self._ping[0], host_in.host_ptr, arr.nbytes,
                                                self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        shape = arr.shape
        for i, piece in enumerate(pieces):
            src, dst = self._ping[i % 2], self._ping[(i + 1) % 2]
            x, y = piece.inputs[0], piece.outputs[0]
            if not piece.context.set_input_shape(x, shape):
                raise ValueError(f"{name!r}: segment {chain.segments[i][0]} cannot take shape {shape}, outside its "
                                 f"engine's optimization profile (max {piece.max_shapes[x]})")
            piece.context.set_tensor_address(x, src)
            piece.context.set_tensor_address(y, dst)
            shape = tuple(piece.context.get_tensor_shape(y))
            nbytes = int(np.prod(shape, dtype=np.int64)) * piece.dtypes[y].itemsize
            if nbytes > self._ping_bytes:
                raise RuntimeError(f"{name!r}: segment {chain.segments[i][0]} output {shape} needs {nbytes} bytes, "
                                   f"the chain's buffers hold {self._ping_bytes}")
            if not piece.context.execute_async_v3(int(self._stream)):
                raise RuntimeError(f"TensorRT execution of {name!r} segment {chain.segments[i][0]} failed "
                                   "(see the log above)")
        out_dtype = pieces[-1].dtypes[pieces[-1].outputs[0]]
        nbytes = int(np.prod(shape, dtype=np.int64)) * out_dtype.itemsize
        if nbytes > host_out.nbytes:
            raise RuntimeError(f"{name!r}: output {shape} needs {nbytes} bytes, its buffer holds {host_out.nbytes}")
        _cuda_call(self._cudart.cudaMemcpyAsync(host_out.host_ptr, self._ping[len(pieces) % 2], nbytes,
                                                self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _cuda_call(self._cudart.cudaStreamSynchronize(self._stream))
        self._sample_memory()
        size = int(np.prod(shape, dtype=np.int64))
        out = host_out.host.view(np.uint8)[:nbytes].view(out_dtype)[:size]
        return {BACKBONE_OUTPUT: out.reshape(shape).astype(np.float32, copy=True)}

    def input_names(self, name: str) -> list[str]:
        if name in self._chains:
            return [BACKBONE_INPUT, BACKBONE_MASK_INPUT]
        model = self._models.get(name)
        if model is None:
            self._require(name)
        return list(model.inputs)

    @property
    def names(self) -> list[str]:
        return [n for n, m in self._models.items() if not m.segment] + list(self._chains)

    @property
    def scratch_bytes(self) -> int:
        """Size of the one scratch buffer every context shares."""
        return self._scratch[1]

    # -- resources ------------------------------------------------------------------------------
    def _free(self, model: _Loaded) -> None:
        for buf in model.buffers.values():
            self._cudart.cudaFree(buf.device_ptr)
            self._cudart.cudaFreeHost(buf.host_ptr)
        model.buffers.clear()
        model.context = None  # the context must go before its engine
        model.engine = None

    def close(self) -> None:
        if self._closed:
            return
        for model in self._models.values():
            self._free(model)
        self._models.clear()
        self._chains.clear()
        for ptr in self._ping:
            self._cudart.cudaFree(ptr)
        self._ping = []
        for buf in (self._host_in, self._host_out):
            if buf is not None:
                self._cudart.cudaFreeHost(buf.host_ptr)
        self._host_in = self._host_out = None
        if self._scratch[0]:
            self._cudart.cudaFree(self._scratch[0])
        self._scratch = (0, 0)
        self._cudart.cudaStreamDestroy(self._stream)
        super().close()

    def _sample_memory(self) -> None:
        free, total = _cuda_call(self._cudart.cudaMemGetInfo())
        self._peak_used = max(self._peak_used, int(total) - int(free))

    def peak_memory_mb(self) -> float | None:
        """Peak device memory in use (whole GPU, sampled after loads and runs) in MiB."""
        return self._peak_used / (1024.0 * 1024.0)

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (cuda:{self.device_index})"
