"""ONNX Runtime backend: one InferenceSession per model; CPU, or CUDA/TensorRT execution providers.

A bundle's backbone is one model for every stage configuration (format 2): the configuration is a
feed (``stage_mask`` int64 (K,)), not a session. Its manifest entry carries the session settings the
exporter measured (``ort_session``: optimisation level, memory pattern off); they are applied here.

``layout="configs"`` runs each configuration's flat graph (``backbone_<mask>.onnx``, no ``If``, same
weights file) as its own session: the speed of per-configuration graphs, at the price of each
session's private blocked (NCHWc) copy of its 2D weights; the exporter measures both and records the
better one within the memory budget as the manifest's ``ort_layout``, which ``layout="auto"`` (the
default) runs. ``layout="segments"`` runs the bundle's segment files instead (one session per segment variant,
chained on the host, the layout TensorRT uses): ONNX Runtime's NCHWc rewrite, which does not run
inside the one graph's ``If`` branches, then applies to every 2D piece, so degraded configurations
keep the speed of a per-configuration graph; the price is a blocked copy of the 2D weights per
session (1.5-1.7x Upper's memory against about 1.1x, docs/shared-weights.md section 5). Every session
shares one CPU arena (``session.use_env_allocators``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_NAME, BACKBONE_OUTPUT, SEGMENT_INPUT,
                       Bundle)
from ...masks import mask_to_str
from . import ORT_LAYOUTS
from .base import Backend, BackendUnavailableError, check_inputs, process_peak_rss_mb

_ENV_ARENA: list = []  # the process-wide CPU arena the segment sessions share (registered once)


class _SegmentChain:
    """The backbone as the bundle's segment sessions: per segment, its ``choice`` table and its
    variants as (session, takes ``stage_mask``)."""

    def __init__(self, steps: list[tuple[list[int], list[tuple[Any, bool]]]]) -> None:
        self.steps = steps

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The configuration ``stage_mask`` names, segment by segment: one host hand-off per boundary."""
        mask = _feed(inputs[BACKBONE_MASK_INPUT]).reshape(-1)
        index = int(mask_to_str(mask), 2)
        x = _feed(inputs[BACKBONE_INPUT])
        for choice, sessions in self.steps:
            session, takes_mask = sessions[choice[index]]
            feeds = {SEGMENT_INPUT: x, BACKBONE_MASK_INPUT: mask} if takes_mask else {SEGMENT_INPUT: x}
            x = session.run(None, feeds)[0]
        return {BACKBONE_OUTPUT: x}

class _ConfigSessions:
    """The backbone as one session per configuration: ``stage_mask`` picks the session."""

    def __init__(self, sessions: Mapping[str, tuple[Any, bool]]) -> None:
        self.sessions = dict(sessions)  # mask -> (session, takes ``stage_mask``)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = _feed(inputs[BACKBONE_MASK_INPUT]).reshape(-1)
        session, takes_mask = self.sessions[mask_to_str(mask)]
        x = _feed(inputs[BACKBONE_INPUT])
        feeds = {BACKBONE_INPUT: x, BACKBONE_MASK_INPUT: mask} if takes_mask else {BACKBONE_INPUT: x}
        return {BACKBONE_OUTPUT: session.run(None, feeds)[0]}


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
        layout: str = "auto",
    ) -> None:
        super().__init__()
        if layout not in ORT_LAYOUTS:
            raise ValueError(f"unknown ONNX Runtime layout {layout!r}; valid: {list(ORT_LAYOUTS)}")
        import onnxruntime

        self._ort = onnxruntime
        self.layout = layout  # asked for; ``backbone_layout`` is what runs once a bundle is loaded
        self.backbone_layout: str | None = None
        self.device = device
        self.providers = list(providers) if providers else ort_providers(device)
        self.intra_op_threads, self.allow_spinning = intra_op_threads, allow_spinning
        self._sessions: dict[str, Any] = {}  # name -> InferenceSession, or the _SegmentChain backbone
        self._io: dict[str, tuple[list[str], list[str]]] = {}  # input and output names, read at load

    loads_backbone_from_bundle = True  # ``loading.load_bundle_model`` hands it the bundle: the layout decides

    @property
    def chains_segments(self) -> bool:
        """True when the backbone is the bundle's segment files chained (``load_bundle_backbone``)."""
        return self.backbone_layout == "segments"

    def _options(self, meta: dict[str, Any]):
        """SessionOptions from the manifest entry's ``ort_session`` and this backend's thread pool."""
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
        return options

    def _load(self, name: str, path: Path, meta: dict[str, Any]) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file for {name!r} not found")
        session = self._ort.InferenceSession(str(path), self._options(meta), providers=self.providers)
        self._sessions[name] = session
        self._io[name] = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])

    def _session(self, name: str) -> Any:
        try:
            return self._sessions[name]
        except KeyError:
            self._require(name)

    def resolve_layout(self, bundle: Bundle) -> str:
        """The layout that runs ``bundle``'s backbone: the one asked for, or for ``auto`` the one its
        exporter measured (``ort_layout``; ``graph`` when the bundle has no flat graphs)."""
        entry = bundle.manifest.backbone
        layout = entry.ort_layout if self.layout == "auto" else self.layout
        if layout == "configs" and not entry.config_graphs:
            if self.layout == "configs":
                raise FileNotFoundError(f"{bundle.root}: the bundle has no per-configuration graphs "
                                        "(--ort-layout configs); re-export it with this ada3d-edge")
            layout = "graph"
        return layout

    def _shared_arena_options(self, options_meta: dict[str, Any]):
        """Session options whose sessions share one process-wide CPU arena (several per backbone)."""
        if self.providers == ["CPUExecutionProvider"] and not _ENV_ARENA:
            info = self._ort.OrtMemoryInfo("Cpu", self._ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                           self._ort.OrtMemType.DEFAULT)
            self._ort.create_and_register_allocator(info, self._ort.OrtArenaCfg(0, -1, -1, -1))
            _ENV_ARENA.append(info)
        options = self._options(options_meta)
        if _ENV_ARENA:
            options.add_session_config_entry("session.use_env_allocators", "1")
        return options

    def _open(self, path: Path, what: str, options_meta: dict[str, Any]) -> Any:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} not found")
        return self._ort.InferenceSession(str(path), self._shared_arena_options(options_meta), providers=self.providers)

    def load_bundle_backbone(self, bundle: Bundle, masks: Sequence[str] | None = None) -> Any:
        """Load ``bundle``'s backbone as ``BACKBONE_NAME`` in the layout ``resolve_layout`` names: the
        one graph, every segment variant file chained, or one flat graph per configuration (same
        session settings as the one graph, one shared CPU arena). ``masks``: in the ``configs`` layout,
        only these configurations' graphs (Upper alone for a memory baseline). Returns its manifest entry."""
        entry = bundle.manifest.backbone
        layout = self.resolve_layout(bundle)
        options_meta = {"ort_session": dataclasses.asdict(entry.ort_session)} if entry.ort_session else {}
        if layout == "graph":
            self.load(BACKBONE_NAME, bundle.root / entry.file, dataclasses.asdict(entry))
        elif layout == "configs":
            self._sessions[BACKBONE_NAME] = _ConfigSessions({
                c.mask: (self._open(bundle.root / c.file, f"graph of configuration {c.mask}", options_meta),
                         BACKBONE_MASK_INPUT in c.inputs) for c in entry.config_graphs
                if masks is None or c.mask in masks})
        else:
            chain = []
            for seg in entry.segments:
                sessions = [(self._open(bundle.root / v.file, f"segment file of {seg.name!r}", options_meta),
                             BACKBONE_MASK_INPUT in v.inputs) for v in seg.variants]
                chain.append((list(seg.choice), sessions))
            self._sessions[BACKBONE_NAME] = _SegmentChain(chain)
        self._io[BACKBONE_NAME] = ([BACKBONE_INPUT, BACKBONE_MASK_INPUT], [BACKBONE_OUTPUT])
        self.backbone_layout = layout
        return entry

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(name)
        in_names, out_names = self._io[name]
        check_inputs(name, in_names, inputs)
        if isinstance(session, (_SegmentChain, _ConfigSessions)):
            return session.run(inputs)
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
        layout = {"segments": ", segment files chained", "configs": ", a graph per configuration"}.get(
            self.backbone_layout or "", "")
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)}{layout})"

    def peak_memory_mb(self) -> float | None:
        """Process peak RSS on CPU (includes everything else in the process); None on GPU."""
        return process_peak_rss_mb() if self.providers == ["CPUExecutionProvider"] else None
