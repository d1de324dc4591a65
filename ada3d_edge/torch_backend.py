"""PyTorch backend: runs ``nn.Module``s behind the runtime's Backend interface (parity, GPU timing).

It lives outside ``ada3d_edge.runtime`` (which never imports torch); the backend table names it.
torch is imported only when a ``TorchBackend`` is created.
Modules take the ONNX inputs positionally (``policy(frames)``, ``backbone(clip, stage_mask)``) and return a
tensor, a tuple of tensors in the ONNX output order, or a dict by output name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .bundle import default_io
from .runtime.backends.base import Backend, check_inputs


def _as_input(value: np.ndarray) -> np.ndarray:
    """float32 for float inputs; integer inputs (``stage_mask``) as int64."""
    value = np.asarray(value)
    return np.ascontiguousarray(value, dtype=np.int64 if value.dtype.kind in "iub" else np.float32)


class TorchBackend(Backend):
    """Runs registered PyTorch modules; ``load`` selects one by name (the path is ignored)."""

    kind = "torch"
    file_kind = "module"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        try:
            import torch
        except ImportError as exc:
            raise ImportError("the 'torch' backend needs PyTorch: `pip install torch` "
                              "(or use the 'ort' / 'trt' backends, which do not)") from exc

        self._torch = torch
        self.device = torch.device(device)
        self._available: dict[str, Any] = {}
        self._io: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._loaded: dict[str, Any] = {}

    @classmethod
    def from_modules(
        cls,
        modules: Mapping[str, Any],
        device: str = "cpu",
        io: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
    ) -> "TorchBackend":
        """Backend over ``{name: module}``; ``io`` overrides ``{name: (inputs, outputs)}`` names.

        Names follow the bundle: ``policy`` and ``backbone``; their I/O names default to the ONNX
        ones (``frames`` -> ``frame_probs, stage_probs``; ``clip``, ``stage_mask`` -> ``logits``).
        """
        backend = cls(device=device)
        for name, module in modules.items():
            backend._available[name] = module
            backend._io[name] = tuple(map(tuple, io[name])) if io and name in io else default_io(name)
        return backend

    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        if name not in self._available:
            raise ValueError(f"the torch backend has no module {name!r}; pass it to "
                             f"TorchBackend.from_modules (has {sorted(self._available)})")
        self._loaded[name] = self._available[name].to(self.device).eval()

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = self._loaded.get(name)
        if module is None:
            self._require(name)
        in_names, out_names = self._io[name]
        check_inputs(name, in_names, inputs)
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(_as_input(inputs[n])).to(self.device) for n in in_names]
            result = module(*args)
        if isinstance(result, Mapping):
            result = [result[n] for n in out_names]
        elif not isinstance(result, (tuple, list)):
            result = [result]
        if len(result) != len(out_names):
            raise ValueError(f"module {name!r} returned {len(result)} outputs, expected {list(out_names)}")
        return {n: t.detach().float().cpu().numpy() for n, t in zip(out_names, result)}  # .cpu() syncs

    def input_names(self, name: str) -> list[str]:
        if name not in self._loaded:
            self._require(name)
        return list(self._io[name][0])

    @property
    def names(self) -> list[str]:
        return list(self._loaded)

    def close(self) -> None:
        self._loaded.clear()
        super().close()

    def describe(self) -> str:
        return f"torch {self._torch.__version__} ({self.device})"

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory allocated by torch on this device; None on CPU."""
        if self.device.type != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / (1024.0 * 1024.0)
