"""TensorRT and CUDA (cuda-python) helpers shared by the engine builder and the TensorRT backend.

Torch-free and import-free at module level: ``tensorrt`` and cuda-python are imported only when a
function here is called, so this module imports on any machine. PyCUDA is not used: it hangs beside
PyTorch (TensorRT issue #4608).
"""
from __future__ import annotations

from typing import Any

INSTALL_HINT = (
    "`pip install ada3d-edge[trt]` (tensorrt and cuda-python); on Jetson, TensorRT ships with "
    "JetPack (its python3-libnvinfer package) and only cuda-python needs pip"
)


def import_tensorrt(purpose: str = "the 'trt' backend") -> Any:
    """Import ``tensorrt`` or raise ImportError saying what needs it and how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(f"{purpose} needs TensorRT's Python package, which is not installed: "
                          f"{INSTALL_HINT}") from exc
    return tensorrt


def tensorrt_major(trt: Any) -> int:
    """Major version of an imported ``tensorrt`` module ("10.3.0" -> 10)."""
    return int(str(trt.__version__).split(".")[0])


def import_cudart() -> Any:
    """Import the CUDA runtime bindings of cuda-python (new or old module layout)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise ImportError(f"TensorRT needs cuda-python here: {INSTALL_HINT}") from exc
    return cudart


def cuda_call(result: Any) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on error."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def parse_cuda_device(device: str) -> int:
    """"cuda" -> 0, "cuda:1" -> 1; anything else is a ValueError."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"the 'trt' backend runs on a CUDA device: device must be 'cuda' or 'cuda:N', got {device!r}")


def running_gpu_name(cudart: Any, device_index: int = 0) -> str:
    """GPU model name as CUDA reports it (what build-engines records as ``gpu_name``)."""
    prop = cuda_call(cudart.cudaGetDeviceProperties(device_index))
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    return str(name).strip()


def engine_identity(device: str = "cuda") -> tuple[str, str]:
    """(TensorRT version, GPU name) of this machine, for build-engines to record in the manifest."""
    trt = import_tensorrt("building engines")
    cudart = import_cudart()
    return str(trt.__version__), running_gpu_name(cudart, parse_cuda_device(device))


# --- shared scratch memory (user-managed execution contexts) ------------------------------------
# TensorRT 10.0 has ``engine.device_memory_size`` and the ``context.device_memory`` attribute;
# 10.1 added ``device_memory_size_v2`` and ``context.set_device_memory(ptr, size)``; 10.14 and 11 can
# also take the allocation strategy through ``engine.create_runtime_config()``.

def user_managed_context(trt: Any, engine: Any) -> Any:
    """An execution context that allocates no scratch memory: ``set_context_scratch`` gives it some."""
    strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    if tensorrt_major(trt) >= 11 and hasattr(engine, "create_runtime_config"):
        config = engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(strategy)
        return engine.create_execution_context(config)
    return engine.create_execution_context(strategy)


def engine_scratch_bytes(engine: Any) -> int:
    """Scratch (activation) memory one context of ``engine`` needs, in bytes."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(engine.device_memory_size if size is None else size)


def set_context_scratch(context: Any, ptr: int, size: int) -> None:
    """Point a user-managed context at ``size`` bytes of device memory at ``ptr``."""
    setter = getattr(context, "set_device_memory", None)
    if setter is not None:
        try:
            setter(int(ptr), int(size))
            return
        except TypeError:  # a binding whose set_device_memory takes the pointer only
            pass
    context.device_memory = int(ptr)  # TensorRT 10.0
