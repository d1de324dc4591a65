"""Inference backends behind one small interface: ONNX Runtime, TensorRT, PyTorch.

Every backend loads named models (``policy``, ``backbone_<mask>``), runs them on dicts of numpy
arrays and is a context manager::

    with make_backend("ort") as backend:
        backend.load("policy", bundle.policy_path)
        out = backend.run("policy", {"frames": x})     # {"frame_probs": ..., "stage_probs": ...}

No torch import here: the TensorRT and PyTorch backends import their libraries lazily.
"""
from __future__ import annotations

import abc
import os
import sys
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np

BACKEND_KINDS = ("ort", "trt", "torch")


class BackendUnavailableError(RuntimeError):
    """The backend or device asked for cannot run here (library or GPU missing); says what to install."""


# What the CLI reports as one `Error:` line (the user's bundle, option or machine); the rest are bugs.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ImportError,
                                                BackendUnavailableError)


class Backend(abc.ABC):
    """A set of loaded models run by name. Subclasses implement ``_load``/``run``/``input_names``.

    Attributes:
        kind: short name ("ort", "trt", "torch").
        file_kind: which bundle file the backend loads: "onnx", "plan" or "module".
        load_count: number of successful ``load`` calls (the predictor loads once, at start-up).
    """

    kind = "base"
    file_kind = "onnx"

    def __init__(self) -> None:
        self.load_count = 0
        self._closed = False

    def load(self, name: str, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> None:
        """Load the model file at ``path`` under ``name``; ``meta`` is its manifest entry (optional)."""
        if self._closed:
            raise RuntimeError(f"{self.describe()} is closed; create a new backend")
        self._load(name, Path(path), dict(meta or {}))
        self.load_count += 1

    @abc.abstractmethod
    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        """Backend-specific loading."""

    @abc.abstractmethod
    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run model ``name`` on named inputs; returns named outputs as numpy arrays."""

    @abc.abstractmethod
    def input_names(self, name: str) -> list[str]:
        """Input tensor names of model ``name``."""

    @property
    @abc.abstractmethod
    def names(self) -> list[str]:
        """Names of the loaded models."""

    def close(self) -> None:
        """Release every model and buffer. Idempotent."""
        self._closed = True

    def describe(self) -> str:
        """One line: backend, device, library version."""
        return self.kind

    def peak_memory_mb(self) -> float | None:
        """Peak memory attributable to inference in MiB, or None where unknown."""
        return None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, name: str) -> NoReturn:
        raise KeyError(f"model {name!r} is not loaded in {self.describe()}; loaded: {self.names}")


def check_inputs(name: str, expected: Sequence[str], inputs: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError when ``inputs`` does not have exactly the ``expected`` names."""
    if set(inputs) != set(expected):
        raise ValueError(f"model {name!r} takes inputs {list(expected)}, got {sorted(inputs)}")


def process_peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (Linux/macOS), else None."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


# --- ONNX Runtime -----------------------------------------------------------------------------

_ORT_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def ort_providers(device: str = "cpu", available: Sequence[str] | None = None) -> list[str]:
    """Execution providers for ``device`` ("cpu", "cuda", "tensorrt"), checked against ``available``."""
    if device not in _ORT_DEVICE_PROVIDERS:
        raise ValueError(f"unknown device {device!r} for the ort backend; valid: {list(_ORT_DEVICE_PROVIDERS)}")
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    wanted = _ORT_DEVICE_PROVIDERS[device]
    if wanted[0] not in available:
        raise BackendUnavailableError(
            f"device {device!r} needs ONNX Runtime's {wanted[0]}, but this onnxruntime only has "
            f"{list(available)}; `pip install onnxruntime-gpu` (matching your CUDA) instead of "
            "onnxruntime, or use device='cpu'"
        )
    return [p for p in wanted if p in available]


class OrtBackend(Backend):
    """ONNX Runtime, one InferenceSession per model. CPU by default."""

    kind = "ort"
    file_kind = "onnx"

    def __init__(
        self,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        super().__init__()
        import onnxruntime

        self._ort = onnxruntime
        self.device = device
        self.providers = list(providers) if providers else ort_providers(device)
        self.intra_op_threads = intra_op_threads
        self._sessions: dict[str, Any] = {}

    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file for {name!r} not found")
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = int(self.intra_op_threads)
        self._sessions[name] = self._ort.InferenceSession(str(path), options, providers=self.providers)

    def _session(self, name: str) -> Any:
        try:
            return self._sessions[name]
        except KeyError:
            self._require(name)

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(name)
        check_inputs(name, self.input_names(name), inputs)
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        outputs = session.run(None, feeds)
        return {o.name: arr for o, arr in zip(session.get_outputs(), outputs)}

    def input_names(self, name: str) -> list[str]:
        return [i.name for i in self._session(name).get_inputs()]

    @property
    def names(self) -> list[str]:
        return list(self._sessions)

    def close(self) -> None:
        self._sessions.clear()
        super().close()

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)})"

    def peak_memory_mb(self) -> float | None:
        """Process peak RSS on CPU (includes everything else in the process); None on GPU."""
        return process_peak_rss_mb() if self.providers == ["CPUExecutionProvider"] else None


# --- factory ----------------------------------------------------------------------------------


def make_backend(kind: str, device: str | None = None, **options: Any) -> Backend:
    """Create a backend by kind.

    Args:
        kind: "ort" (ONNX Runtime), "trt" (TensorRT plans) or "torch" (PyTorch modules,
            pass ``modules={name: nn.Module}``).
        device: None for the backend's default ("cpu"; "cuda" for trt), else "cpu" / "cuda"
            (ort also "tensorrt"; trt and torch also "cuda:N").
        options: passed to the backend's constructor.
    """
    if kind == "ort":
        return OrtBackend(device=device or "cpu", **options)
    if kind == "trt":
        from .trt_backend import TrtBackend

        return TrtBackend(device=device or "cuda", **options)
    if kind == "torch":
        from .torch_backend import TorchBackend

        modules = options.pop("modules", None)
        if modules is None:
            raise ValueError("the torch backend runs PyTorch modules: "
                             "make_backend('torch', modules={'policy': ..., 'backbone_11': ...})")
        return TorchBackend.from_modules(modules, device=device or "cpu", **options)
    raise ValueError(f"unknown backend kind {kind!r}; valid kinds: {list(BACKEND_KINDS)}")
