"""TensorRT backend (TensorRT 10 tensor-name API + cuda-python).

``tensorrt`` and ``cuda-python`` are imported only when a ``TrtBackend`` is created (helpers in
``ada3d_edge/trt_api.py``, shared with the engine builder), so this module imports anywhere.

A plan file only runs on the TensorRT version and GPU model that built it; the manifest records
both (``tensorrt_version``, ``gpu_name``) and ``load`` refuses a mismatch before deserializing.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...trt_api import cuda_call as _cuda_call, import_cudart, import_tensorrt, parse_cuda_device, running_gpu_name
from .base import Backend, EngineMismatchError, check_inputs


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
    engine: Any
    context: Any
    buffers: dict[str, _Buffer]
    inputs: list[str]
    outputs: list[str]


class TrtBackend(Backend):
    """Runs TensorRT plans; one execution context and one set of I/O buffers per model."""

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
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
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
        if name in self._models:
            self._free(self._models.pop(name))
        buffers = {}
        for n in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            buffers[n] = self._allocate(n, n in inputs, dtype, max_shapes[n])
            context.set_tensor_address(n, buffers[n].device_ptr)
        self._models[name] = _Loaded(engine, context, buffers, inputs, outputs)
        self._sample_memory()

    def _allocate(self, name: str, is_input: bool, dtype: np.dtype, shape: tuple[int, ...]) -> _Buffer:
        size = int(np.prod(shape, dtype=np.int64))
        nbytes = max(size * dtype.itemsize, 1)
        host_ptr = int(_cuda_call(self._cudart.cudaMallocHost(nbytes)))
        device_ptr = int(_cuda_call(self._cudart.cudaMalloc(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
        host = np.frombuffer(raw, dtype=np.uint8)[: size * dtype.itemsize].view(dtype)
        return _Buffer(name, is_input, dtype, shape, nbytes, host_ptr, device_ptr, host)

    # -- running --------------------------------------------------------------------------------
    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self._models.get(name) or self._require(name)
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

    def input_names(self, name: str) -> list[str]:
        model = self._models.get(name) or self._require(name)
        return list(model.inputs)

    @property
    def names(self) -> list[str]:
        return list(self._models)

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
