"""Inference backends as a table: one row per kind says which module implements it, which bundle
file it loads, its default device, and whether `ada3d run` can use it (from the bundle alone).

The table drives the CLI's ``--backend``/``--device`` choices, ``make_backend`` and the benchmark.
Importing this package imports nothing heavy (no numpy, no onnxruntime): a row's module loads
only when a backend of that kind is made. The PyTorch backend is implemented outside the runtime
(``ada3d_edge.torch_backend``): the runtime never imports torch; it runs modules handed to it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backend


@dataclass(frozen=True)
class BackendSpec:
    """One row of the backend table."""

    kind: str
    module: str  # dotted path of the module holding the class
    class_name: str
    file_kind: str  # what it loads: "onnx", "plan" (TensorRT) or "module" (PyTorch, not in a bundle)
    default_device: str
    devices: tuple[str, ...]
    runs_bundle: bool  # loads every model from a bundle alone (what `ada3d run` needs)
    summary: str

    def load_class(self) -> type:
        """The backend class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.class_name)


BACKENDS: dict[str, BackendSpec] = {spec.kind: spec for spec in (
    BackendSpec("ort", "ada3d_edge.runtime.backends.ort", "OrtBackend", "onnx", "cpu",
                ("cpu", "cuda", "tensorrt"), True, "ONNX Runtime (CPU; CUDA/TensorRT execution providers)"),
    BackendSpec("trt", "ada3d_edge.runtime.backends.trt", "TrtBackend", "plan", "cuda", ("cuda",), True,
                "TensorRT plans built by `ada3d build-engines` (tensorrt + cuda-python)"),
    BackendSpec("torch", "ada3d_edge.torch_backend", "TorchBackend", "module", "cpu", ("cpu", "cuda"), False,
                "PyTorch modules rebuilt from a checkpoint (parity, GPU timing; `ada3d bench --checkpoint`)"),
)}
BACKEND_KINDS = tuple(BACKENDS)

# `ada3d run`'s ONNX Runtime thread pool, chosen by benchmarks/run_threads.py on the 2-core CPU
# (benchmarks/results/run_threads.md): one intra-op thread was never slower at p50 than the default
# (one per core, spinning), and spinning workers had the worse p95 with 2 threads, idle and loaded.
ORT_RUN_THREADS = 1
ORT_RUN_SPINNING = False
# What the ort backend runs as the backbone (`--ort-layout`): `auto`, the layout the exporter measured
# best within the memory budget (the manifest's `ort_layout`); the one graph with an `If` per segment
# (memory: about Upper's); the segment files chained; or a flat graph per configuration (both: the
# speed of per-configuration graphs on CPU, for private copies of the 2D weights;
# docs/shared-weights.md sections 5 and 10).
ORT_LAYOUTS = ("auto", "graph", "segments", "configs")


def backend_kinds(runs_bundle: bool = False) -> list[str]:
    """Kinds in table order; only those that run from a bundle alone when ``runs_bundle``."""
    return [k for k, s in BACKENDS.items() if s.runs_bundle or not runs_bundle]


def device_choices(kinds: list[str] | None = None) -> list[str]:
    """Every device some backend of ``kinds`` (default: all) accepts, in table order."""
    out: list[str] = []
    for kind in kinds or list(BACKENDS):
        out += [d for d in BACKENDS[kind].devices if d not in out]
    return out


def backend_spec(kind: str) -> BackendSpec:
    """The row for ``kind`` (ValueError naming the valid kinds)."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}; valid kinds: {list(BACKENDS)}") from None


def make_backend(kind: str, device: str | None = None, **options: Any) -> "Backend":
    """Create a backend by kind.

    Args:
        kind: a key of ``BACKENDS``: "ort", "trt" or "torch" (pass ``modules={name: nn.Module}``).
        device: None for the row's default device, else one of its ``devices`` (trt also "cuda:N").
        options: passed to the backend's constructor (or ``from_modules`` for "torch").
    """
    spec = backend_spec(kind)
    cls = spec.load_class()
    device = device or spec.default_device
    if spec.file_kind == "module":
        modules = options.pop("modules", None)
        if modules is None:
            raise ValueError(f"the {kind} backend runs PyTorch modules: "
                             f"make_backend({kind!r}, modules={{'policy': ..., 'backbone_11': ...}})")
        return cls.from_modules(modules, device=device, **options)
    return cls(device=device, **options)
