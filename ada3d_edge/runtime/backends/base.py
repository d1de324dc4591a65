"""The interface every backend implements, the errors they raise, and the helpers they share.

Every backend loads named models (``policy``, ``backbone_<mask>``), runs them on dicts of numpy
arrays and is a context manager::

    with make_backend("ort") as backend:
        backend.load("policy", bundle.policy_path)
        out = backend.run("policy", {"frames": x})     # {"frame_probs": ..., "stage_probs": ...}
"""
from __future__ import annotations

import abc
import os
import sys
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np

class BackendUnavailableError(RuntimeError):
    """The backend or device asked for cannot run here (library or GPU missing); says what to install."""


class EngineMismatchError(BackendUnavailableError):
    """A TensorRT plan built for another TensorRT version or GPU."""


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
