"""ONNX Runtime backend: one InferenceSession per model; CPU, or CUDA/TensorRT execution providers.

A bundle's backbone is one model for every stage configuration (format 2): the configuration is a
feed (``stage_mask`` int64 (K,)), not a session. Its manifest entry carries the session settings the
exporter measured (``ort_session``: optimisation level, memory pattern off); they are applied here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .base import Backend, BackendUnavailableError, check_inputs, process_peak_rss_mb

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


def _feed(value: np.ndarray) -> np.ndarray:
    """float32 for float inputs; integer inputs (``stage_mask``) as int64."""
    value = np.asarray(value)
    return np.ascontiguousarray(value, dtype=np.int64 if value.dtype.kind in "iub" else np.float32)


class OrtBackend(Backend):
    """ONNX Runtime, one InferenceSession per model. CPU by default.

    ``intra_op_threads`` (None: ONNX Runtime's default, one per core) and ``allow_spinning``
    (None: its default, on) set each session's intra-op thread pool; `ada3d run`'s defaults are
    ``backends.ORT_RUN_THREADS`` / ``ORT_RUN_SPINNING``.
    """

    kind = "ort"
    file_kind = "onnx"

    def __init__(
        self,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> None:
        super().__init__()
        import onnxruntime

        self._ort = onnxruntime
        self.device = device
        self.providers = list(providers) if providers else ort_providers(device)
        self.intra_op_threads, self.allow_spinning = intra_op_threads, allow_spinning
        self._sessions: dict[str, Any] = {}
        self._io: dict[str, tuple[list[str], list[str]]] = {}  # input and output names, read at load

    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file for {name!r} not found")
        options = self._ort.SessionOptions()
        settings = meta.get("ort_session") or {}
        level = settings.get("graph_optimization_level", "ORT_ENABLE_ALL")
        options.graph_optimization_level = getattr(self._ort.GraphOptimizationLevel, level)
        if "enable_mem_pattern" in settings:
            options.enable_mem_pattern = bool(settings["enable_mem_pattern"])
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = int(self.intra_op_threads)
        if self.allow_spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        session = self._ort.InferenceSession(str(path), options, providers=self.providers)
        self._sessions[name] = session
        self._io[name] = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])

    def _session(self, name: str) -> Any:
        try:
            return self._sessions[name]
        except KeyError:
            self._require(name)

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(name)
        in_names, out_names = self._io[name]
        check_inputs(name, in_names, inputs)
        feeds = {k: _feed(v) for k, v in inputs.items()}  # no copy if already so
        return dict(zip(out_names, session.run(None, feeds)))

    def input_names(self, name: str) -> list[str]:
        self._session(name)
        return list(self._io[name][0])

    @property
    def names(self) -> list[str]:
        return list(self._sessions)

    def close(self) -> None:
        self._sessions.clear()
        self._io.clear()
        super().close()

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)})"

    def peak_memory_mb(self) -> float | None:
        """Process peak RSS on CPU (includes everything else in the process); None on GPU."""
        return process_peak_rss_mb() if self.providers == ["CPUExecutionProvider"] else None
