"""The bundle: a directory of ONNX/TensorRT files described by ``manifest.json``.

The manifest is the only contract between export and runtime (schema in ``docs/INTERFACES.md``).
This module reads and writes it with JSON only (never pickle) and never imports torch.

Format 2 (docs/shared-weights.md section 6): one backbone graph serves every stage configuration
from one weights file (``backbone.weights``, the external data of every backbone ``.onnx``). ONNX
Runtime runs ``backbone_shared.onnx`` with the configuration as an input (``stage_mask``); TensorRT
builds one engine per segment variant (``<segment>_v<i>.onnx``) and chains them. Format 1 bundles
(one ``backbone_<mask>.onnx`` per configuration) are refused: re-export them.

Typical use::

    bundle = open_bundle("out/bundle")           # checks format version, files (incl. weights), sha256
    bundle.backbone_path                         # -> Path to backbone_shared.onnx
    bundle.segment_variants("10")                # -> the segment files configuration 10 chains
    bundle.gflops("10", num_kept_frames=5)       # backbone GFLOPs for T' = 5
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .masks import all_masks, mask_to_str, upper_mask

FORMAT = "ada3d-bundle"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"

# ONNX I/O names (docs/INTERFACES.md); backends for PyTorch modules reuse them.
POLICY_NAME = "policy"
POLICY_INPUT = "frames"
POLICY_OUTPUTS = ("frame_probs", "stage_probs")
BACKBONE_INPUT = "clip"
BACKBONE_OUTPUT = "logits"
BACKBONE_MASK_INPUT = "stage_mask"  # int64 (K,), 1 = 3D, stage order; one configuration per batch
BACKBONE_NAME = "backbone"  # the one backbone model a backend loads (all configurations)
BACKBONE_LAYOUT = "shared-if"
SEGMENT_INPUT = "x"
SEGMENT_OUTPUT = "y"
# The selection network split in two (manifest key ``policy_split``): per-frame features, then heads.
POLICY_FEATURES_NAME = "policy_features"  # frames (N, 3, P, P) -> features (N, F)
POLICY_HEADS_NAME = "policy_heads"  # features (B, F), the mean over a clip's T frames -> probs
POLICY_FEATURES = "features"


class BundleError(ValueError):
    """A bundle that cannot be used: bad manifest, missing or modified file, unknown version."""


def engine_name(mask: str) -> str:
    """Name a backend uses for the backbone of one stage mask: ``backbone_<mask>``."""
    return f"backbone_{mask}"


def default_io(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the model called ``name`` (``policy`` or ``backbone_*``)."""
    if name == POLICY_NAME:
        return (POLICY_INPUT,), POLICY_OUTPUTS
    if name == POLICY_FEATURES_NAME:
        return (POLICY_INPUT,), (POLICY_FEATURES,)
    if name == POLICY_HEADS_NAME:
        return (POLICY_FEATURES,), POLICY_OUTPUTS
    if name == BACKBONE_NAME:
        return (BACKBONE_INPUT, BACKBONE_MASK_INPUT), (BACKBONE_OUTPUT,)
    if name.startswith("backbone_"):
        return (BACKBONE_INPUT,), (BACKBONE_OUTPUT,)
    raise ValueError(f"unknown model name {name!r}: expected 'policy', 'backbone' or 'backbone_<mask>'")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (mkstemp/mkdtemp make 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)


# --- manifest dataclasses ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle with its checksum. ``size`` (bytes) is optional, for better errors."""

    file: str
    sha256: str
    size: int | None = None

    @classmethod
    def _hash_fields(cls, bundle_dir: str | os.PathLike, file: str) -> dict[str, Any]:
        path = Path(bundle_dir) / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write it before adding it to the manifest")
        return {"file": file, "sha256": sha256_file(path), "size": path.stat().st_size}


@dataclass(frozen=True)
class PolicyEntry(FileEntry):
    """The selection network ``policy.onnx``; GFLOPs per input frame at ``policy_size``."""

    gflops_per_frame: float = 0.0

    @classmethod
    def for_file(cls, bundle_dir: str | os.PathLike, file: str, gflops_per_frame: float) -> "PolicyEntry":
        """Entry for an existing file, hashing it."""
        return cls(**cls._hash_fields(bundle_dir, file), gflops_per_frame=float(gflops_per_frame))


@dataclass(frozen=True)
class PolicySplit:
    """The selection network in two files, so a stream computes each frame's features once.

    ``features`` (``policy_features.onnx``): frames ``(N, 3, P, P)`` -> ``features`` ``(N, F)``;
    ``heads`` (``policy_heads.onnx``): the mean of a clip's T frame features ``(B, F)`` ->
    ``frame_probs`` ``(B, T)``, ``stage_probs`` ``(B, K)``. Together they compute ``policy.onnx``.
    Since this release the per-frame "features" are the frame's T+K terms of the heads' logits
    (``SelectionNet.head_terms``; F = T + K) and the heads are a bias and sigmoids; older bundles
    (F = the MobileNetV2 width, full heads) compose the same way and still run.
    """

    features: FileEntry
    heads: FileEntry
    num_features: int
    # The heads' bias (F = T + K floats), when the heads are a bias and sigmoids: the runtime then
    # computes them in numpy, ``sigmoid(mean_terms + head_bias)``, instead of a call of
    # ``policy_heads.onnx`` (one engine call a clip less; absent in older bundles).
    head_bias: tuple[float, ...] | None = None

    @classmethod
    def for_files(cls, bundle_dir: str | os.PathLike, features: str, heads: str,
                  num_features: int, head_bias: Sequence[float] | None = None) -> "PolicySplit":
        """Entries for two existing files, hashing them."""
        return cls(FileEntry(**FileEntry._hash_fields(bundle_dir, features)),
                   FileEntry(**FileEntry._hash_fields(bundle_dir, heads)), int(num_features),
                   None if head_bias is None else tuple(float(v) for v in head_bias))

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "PolicySplit":
        if not isinstance(data, Mapping) or not {"features", "heads", "num_features"} <= set(data):
            raise BundleError(f"{source}: 'policy_split' must be an object with 'features', 'heads' and "
                              f"'num_features', got {data!r}; re-export the bundle with `ada3d export`")
        num = data["num_features"]
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise BundleError(f"{source}: policy_split 'num_features' must be a positive integer, got {num!r}")
        bias = data.get("head_bias")
        if bias is not None:
            if (not isinstance(bias, list) or len(bias) != num
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in bias)):
                raise BundleError(f"{source}: policy_split 'head_bias' must be a list of {num} finite numbers "
                                  f"(one per feature), got {bias!r}; re-export the bundle with `ada3d export`")
            bias = tuple(float(v) for v in bias)
        return cls(_entry(FileEntry, data["features"], source, "policy_split.features"),
                   _entry(FileEntry, data["heads"], source, "policy_split.heads"), num, bias)


@dataclass(frozen=True)
class ConfigEntry:
    """One stage configuration: ``mask`` (one char per stage, ``1`` = 3D) and its cost.

    GFLOPs on T' kept frames = ``gflops_per_frame * T' + head_gflops`` (convs scale with T'; the fc
    head is paid once per clip).
    """

    mask: str
    gflops_per_frame: float = 0.0
    head_gflops: float = 0.0


@dataclass(frozen=True)
class SegmentVariantEntry(FileEntry):
    """One variant of a segment as its own ONNX file (input ``x``, output ``y``; weights external in
    the bundle's weights file). ``degraded``: the segment's stage runs as 2D. ``inputs`` lists the
    file's inputs: ``["x"]``, plus ``"stage_mask"`` when it applies per-configuration BN statistics."""

    degraded: bool = False
    inputs: list[str] = field(default_factory=lambda: [SEGMENT_INPUT])

    @classmethod
    def for_file(cls, bundle_dir: str | os.PathLike, file: str, degraded: bool,
                 inputs: Sequence[str] = (SEGMENT_INPUT,)) -> "SegmentVariantEntry":
        return cls(**cls._hash_fields(bundle_dir, file), degraded=bool(degraded), inputs=list(inputs))


@dataclass(frozen=True)
class SegmentEntry:
    """A piece of the chain (stem, a stage, the head): ``choice[int(mask, 2)]`` is the index into
    ``variants`` that configuration ``mask`` runs."""

    name: str
    choice: list[int]
    variants: list[SegmentVariantEntry]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "SegmentEntry":
        if not isinstance(data, Mapping) or not {"name", "choice", "variants"} <= set(data):
            raise BundleError(f"{source}: each backbone 'segments' entry needs 'name', 'choice' and 'variants', "
                              f"got {data!r}; re-export the bundle with `ada3d export`")
        variants = data["variants"]
        if not isinstance(variants, list) or not variants:
            raise BundleError(f"{source}: segment {data['name']!r} needs a non-empty 'variants' list")
        return cls(str(data["name"]), data["choice"],
                   [_entry(SegmentVariantEntry, v, source, f"segments.{data['name']}.variants") for v in variants])


@dataclass(frozen=True)
class ConfigGraphEntry(FileEntry):
    """The flat graph of one configuration (``backbone_<mask>.onnx``: no ``If``, weights external in
    the bundle's one weights file), what ONNX Runtime's ``configs`` layout loads as one session per
    mask. ``inputs``: ``["clip"]``, plus ``"stage_mask"`` when it applies per-configuration BN."""

    mask: str = ""
    inputs: list[str] = field(default_factory=lambda: [BACKBONE_INPUT])


ORT_BACKBONE_LAYOUTS = ("graph", "segments", "configs")  # how ONNX Runtime may run a bundle's backbone


@dataclass(frozen=True)
class OrtSessionOptions:
    """ONNX Runtime session settings the exporter measured for this graph (docs/shared-weights.md):
    the memory pattern kept +100 MiB of activation plans per subgraph and shape."""

    graph_optimization_level: str = "ORT_ENABLE_ALL"
    enable_mem_pattern: bool = False


ORT_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


@dataclass(frozen=True)
class BackboneEntry(FileEntry):
    """Every configuration's backbone from one set of weights (format 2).

    ``file`` (``backbone_shared.onnx``): inputs ``clip`` float32 (B, 3, T', S, S) and ``stage_mask``
    int64 (K,), output ``logits``; an ``If`` per segment with several variants. ``weights`` is the
    external-data file of ``file`` and of every segment file. ``configs``: one per stage mask, with
    its cost. ``segments``: the chain for the segment layout (TensorRT). ``bn_per_config``: the graph
    applies per-configuration BN statistics (a table gathered by the configuration index).
    ``config_graphs``: one flat graph per configuration on the same weights (optional). ``ort_layout``:
    the ONNX Runtime layout the exporter measured as best here (``export.layout_measure``), what
    ``--ort-layout auto`` runs.
    """

    layout: str = BACKBONE_LAYOUT
    weights: FileEntry | None = None
    inputs: dict[str, str] = field(default_factory=lambda: {
        BACKBONE_INPUT: "float32 (B, 3, T', S, S)", BACKBONE_MASK_INPUT: "int64 (K,)"})
    output: str = BACKBONE_OUTPUT
    ort_session: OrtSessionOptions = field(default_factory=OrtSessionOptions)
    configs: list[ConfigEntry] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)
    bn_per_config: bool = False
    config_graphs: list[ConfigGraphEntry] = field(default_factory=list)
    ort_layout: str = "graph"

    @classmethod
    def for_files(cls, bundle_dir: str | os.PathLike, file: str, weights: str, configs: Sequence[ConfigEntry],
                  segments: Sequence[SegmentEntry], bn_per_config: bool = False,
                  ort_session: OrtSessionOptions | None = None,
                  config_graphs: Mapping[str, Mapping[str, Any]] | None = None,
                  ort_layout: str = "graph") -> "BackboneEntry":
        """Entry for existing files, hashing the graph, the weights file and each configuration's
        flat graph (``config_graphs``: mask -> ``{"file", "inputs"}``)."""
        flat = [ConfigGraphEntry(**FileEntry._hash_fields(bundle_dir, c["file"]), mask=mask,
                                 inputs=list(c["inputs"])) for mask, c in (config_graphs or {}).items()]
        return cls(**cls._hash_fields(bundle_dir, file),
                   weights=FileEntry(**FileEntry._hash_fields(bundle_dir, weights)),
                   configs=list(configs), segments=list(segments), bn_per_config=bool(bn_per_config),
                   ort_session=ort_session or OrtSessionOptions(), config_graphs=flat, ort_layout=ort_layout)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "BackboneEntry":
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: 'backbone' must be an object, got {data!r}")
        missing = sorted({"file", "sha256", "weights", "configs", "segments"} - set(data))
        if missing:
            raise BundleError(f"{source}: backbone lacks {missing}; re-export the bundle with `ada3d export`")
        for key in ("configs", "segments"):
            if not isinstance(data[key], list):
                raise BundleError(f"{source}: backbone {key!r} must be a list, got {data[key]!r}")
        fields_ = dict(data)
        fields_["weights"] = _entry(FileEntry, data["weights"], source, "backbone.weights")
        fields_["configs"] = [_entry(ConfigEntry, c, source, "backbone.configs") for c in data["configs"]]
        fields_["segments"] = [SegmentEntry.from_dict(s, source) for s in data["segments"]]
        flat = data.get("config_graphs") or []
        if not isinstance(flat, list):
            raise BundleError(f"{source}: backbone 'config_graphs' must be a list, got {flat!r}")
        fields_["config_graphs"] = [_entry(ConfigGraphEntry, c, source, "backbone.config_graphs") for c in flat]
        fields_["ort_session"] = _entry(OrtSessionOptions, data.get("ort_session") or {}, source,
                                        "backbone.ort_session")
        return _entry(cls, fields_, source, "backbone")

    def files(self) -> list[FileEntry]:
        """The graph, the weights file and every segment variant file."""
        return [self, *([self.weights] if self.weights else []),
                *[v for seg in self.segments for v in seg.variants], *self.config_graphs]

    def validate(self, stages: Sequence[str], source: str) -> None:
        """Layout known, one config per mask, every segment choice table complete and in range."""
        k = len(stages)
        if self.layout != BACKBONE_LAYOUT:
            raise BundleError(f"{source}: backbone layout {self.layout!r} unknown; this ada3d_edge reads "
                              f"{BACKBONE_LAYOUT!r}; re-export the bundle with this ada3d-edge")
        if self.weights is None:
            raise BundleError(f"{source}: backbone 'weights' missing; re-export the bundle with `ada3d export`")
        if self.ort_session.graph_optimization_level not in ORT_LEVELS:
            raise BundleError(f"{source}: backbone ort_session graph_optimization_level "
                              f"{self.ort_session.graph_optimization_level!r} unknown; one of {list(ORT_LEVELS)}")
        masks = [c.mask for c in self.configs]
        expected = all_masks(k)
        bad = [m for m in masks if m not in expected]
        if bad:
            raise BundleError(f"{source}: backbone config mask(s) {bad} invalid for {k} stages {list(stages)}; "
                              f"masks are {k}-character strings of 0/1")
        if sorted(masks) != expected:
            lacking = sorted(set(expected) - set(masks))
            dupes = sorted({m for m in masks if masks.count(m) > 1})
            raise BundleError(f"{source}: need one backbone config per stage mask {expected}; "
                              f"missing {lacking}, duplicated {dupes}")
        if not self.segments:
            raise BundleError(f"{source}: backbone 'segments' is empty; re-export the bundle with `ada3d export`")
        if self.ort_layout not in ORT_BACKBONE_LAYOUTS:
            raise BundleError(f"{source}: backbone ort_layout {self.ort_layout!r} unknown; one of "
                              f"{list(ORT_BACKBONE_LAYOUTS)}")
        flat = sorted(c.mask for c in self.config_graphs)
        if flat and flat != expected:
            raise BundleError(f"{source}: backbone 'config_graphs' must hold one graph per stage mask {expected}, "
                              f"got {flat}; re-export the bundle with `ada3d export`")
        if self.ort_layout == "configs" and not flat:
            raise BundleError(f"{source}: backbone ort_layout 'configs' but no 'config_graphs'; re-export the "
                              "bundle with `ada3d export`")
        for c in self.config_graphs:
            if not isinstance(c.inputs, list) or BACKBONE_INPUT not in c.inputs or not set(c.inputs) <= {
                    BACKBONE_INPUT, BACKBONE_MASK_INPUT}:
                raise BundleError(f"{source}: config graph {c.file} inputs {c.inputs!r}: expected "
                                  f"{[BACKBONE_INPUT]} or {[BACKBONE_INPUT, BACKBONE_MASK_INPUT]}")
        for seg in self.segments:
            choice = seg.choice
            if (not isinstance(choice, list) or len(choice) != 2 ** k
                    or any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < len(seg.variants)
                           for c in choice)):
                raise BundleError(f"{source}: segment {seg.name!r} 'choice' must list, for each of the {2 ** k} "
                                  f"configurations, a variant index in 0..{len(seg.variants) - 1}; got {choice!r}")
            for v in seg.variants:
                if not isinstance(v.inputs, list) or SEGMENT_INPUT not in v.inputs or not set(v.inputs) <= {
                        SEGMENT_INPUT, BACKBONE_MASK_INPUT}:
                    raise BundleError(f"{source}: segment file {v.file} inputs {v.inputs!r}: expected "
                                      f"{[SEGMENT_INPUT]} or {[SEGMENT_INPUT, BACKBONE_MASK_INPUT]}")


TRT_MODELS = (POLICY_NAME, "segment")  # what a TensorRT plan holds (TrtEngineEntry.model)


def segment_model_name(segment: str, variant: int) -> str:
    """Name of one segment variant's engine: ``<segment>_v<i>`` (the stem of its ONNX and plan files)."""
    return f"{segment}_v{int(variant)}"


@dataclass(frozen=True)
class TrtEngineEntry(FileEntry):
    """A TensorRT plan built on the target; only valid for that TensorRT version and GPU.

    ``model`` says what it holds: ``"policy"`` (the selection network) or ``"segment"``: variant
    ``variant`` of the backbone segment ``segment`` (bundle format 2 runs a configuration as a chain of
    segment engines, docs/shared-weights.md section 7).
    """

    model: str = "segment"
    segment: str = ""
    variant: int = 0
    tensorrt_version: str = ""
    gpu_name: str = ""
    precision: str = "fp32"
    max_batch: int = 1

    @property
    def name(self) -> str:
        """``policy`` or ``<segment>_v<i>``: the model name a backend loads this plan under."""
        return POLICY_NAME if self.model == POLICY_NAME else segment_model_name(self.segment, self.variant)

    @classmethod
    def for_file(cls, bundle_dir: str | os.PathLike, file: str, **fields: Any) -> "TrtEngineEntry":
        """Entry for an existing plan file, hashing it; ``fields`` are model, segment, variant, tensorrt_version, ..."""
        return cls(**cls._hash_fields(bundle_dir, file), **fields)

    def check(self, backbone: "BackboneEntry", source: str) -> None:
        """Refuse a model kind, segment or variant the backbone does not have."""
        if self.model not in TRT_MODELS:
            raise BundleError(f"{source}: trt engine {self.file} has model {self.model!r}; expected one of "
                              f"{list(TRT_MODELS)}")
        if self.model == POLICY_NAME:
            return
        segments = {seg.name: len(seg.variants) for seg in backbone.segments}
        n = segments.get(self.segment)
        if n is None or not isinstance(self.variant, int) or isinstance(self.variant, bool) or not 0 <= self.variant < n:
            raise BundleError(f"{source}: trt engine {self.file} is for segment {self.segment!r} variant "
                              f"{self.variant!r}, which the backbone does not have (segments: {segments}); "
                              "rebuild the engines with `ada3d build-engines`")


@dataclass
class Manifest:
    """Everything the runtime needs to know; see docs/INTERFACES.md for the JSON layout."""

    arch: str
    stages: list[str]
    num_frames: int
    stride: int
    crop_size: int
    policy_size: int
    mean: list[float]
    std: list[float]
    classes: list[str]
    policy: PolicyEntry
    backbone: BackboneEntry
    channel_order: str = "RGB"
    multi_label: bool = False
    threshold: float = 0.5
    short_side: int | None = None  # resize target before the centre crop; None = crop_size
    trt_engines: list[TrtEngineEntry] = field(default_factory=list)
    policy_split: PolicySplit | None = None  # absent in bundles exported before the split
    versions: dict[str, Any] = field(default_factory=dict)
    # how the 2D layout of each configuration was chosen: {"method": "fixed", "mode": ...} or the
    # export machine's measurement ({"method": "measured", "modes": {mask: mode}, "ms": ...}; fold_choice.py)
    layout_choice: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def num_stages(self) -> int:
        """K, the number of degradable stages."""
        return len(self.stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; optional ``size`` / ``short_side`` left out when unknown."""
        out = dataclasses.asdict(self)
        if out["short_side"] is None:
            del out["short_side"]
        split = out.pop("policy_split")
        if split is not None:
            if split["head_bias"] is None:
                del split["head_bias"]
            else:
                split["head_bias"] = list(split["head_bias"])
            out["policy_split"] = split
        bb = out["backbone"]
        for entry in [out["policy"], bb, bb["weights"], *[v for seg in bb["segments"] for v in seg["variants"]],
                      *bb["config_graphs"],
                      *out["trt_engines"], *([split["features"], split["heads"]] if split else [])]:
            if entry.get("size") is None:
                entry.pop("size", None)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = MANIFEST_NAME) -> "Manifest":
        """Parse and validate a manifest dict; raises BundleError naming the bad key."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: expected a JSON object, got {type(data).__name__}")
        check_format(data, source)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(kwargs))
        if missing:
            raise BundleError(f"{source}: missing key(s) {missing}; re-export the bundle with `ada3d export`")
        try:
            kwargs["policy"] = _entry(PolicyEntry, data["policy"], source, "policy")
            kwargs["backbone"] = BackboneEntry.from_dict(data["backbone"], source)
            kwargs["trt_engines"] = [_entry(TrtEngineEntry, e, source, "trt_engines")
                                     for e in data.get("trt_engines", [])]
            if data.get("policy_split") is not None:
                kwargs["policy_split"] = PolicySplit.from_dict(data["policy_split"], source)
            manifest = cls(**kwargs)
        except TypeError as exc:
            raise BundleError(f"{source}: malformed manifest ({exc})") from exc
        manifest.validate(source)
        return manifest

    def validate(self, source: str = MANIFEST_NAME) -> None:
        """Check shapes of the fields and that every stage mask has exactly one ONNX engine."""
        k = self.num_stages
        if k < 1 or len(set(self.stages)) != k:
            raise BundleError(f"{source}: 'stages' must be distinct stage names, got {self.stages}")
        for key in ("num_frames", "crop_size", "policy_size", "stride"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise BundleError(f"{source}: {key!r} must be a positive integer, got {value!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise BundleError(f"{source}: 'mean'/'std' need 3 values (std > 0), got {self.mean} / {self.std}")
        if self.channel_order != "RGB":
            raise BundleError(f"{source}: channel_order {self.channel_order!r} unsupported; only 'RGB'")
        if not self.classes:
            raise BundleError(f"{source}: 'classes' is empty")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise BundleError(f"{source}: 'threshold' must be in [0, 1], got {self.threshold}")
        split = self.policy_split
        if split is not None and split.head_bias is not None and split.num_features != self.num_frames + k:
            raise BundleError(f"{source}: policy_split 'head_bias' needs num_features = T + K = "
                              f"{self.num_frames + k}, got {split.num_features}")
        self.backbone.validate(self.stages, source)
        for entry in self.trt_engines:
            entry.check(self.backbone, source)
        for entry in self.all_files():
            _check_plain_name(entry.file, source)

    def all_files(self) -> list[FileEntry]:
        """Every file the manifest lists: policy, backbone graph, weights, segment files, TensorRT plans."""
        split = [self.policy_split.features, self.policy_split.heads] if self.policy_split else []
        return [self.policy, *self.backbone.files(), *self.trt_engines, *split]


def check_format(data: Mapping[str, Any], source: str = MANIFEST_NAME) -> None:
    """Refuse a manifest that is not an ada3d bundle or has a format version this code cannot read."""
    if data.get("format") != FORMAT:
        raise BundleError(f"{source}: 'format' is {data.get('format')!r}, expected {FORMAT!r}; "
                          "this is not an ada3d bundle")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{source}: unknown format_version {version!r}; "
                          f"this ada3d_edge reads format_version {FORMAT_VERSION}")
    if version < FORMAT_VERSION:
        raise BundleError(f"{source}: format_version {version} bundle (one backbone_<mask>.onnx per configuration) "
                          f"is no longer read (this ada3d_edge reads format_version {FORMAT_VERSION}: one set of "
                          "weights for every configuration); re-export with this ada3d-edge: "
                          "`ada3d export CHECKPOINT OUT_DIR`")
    if version > FORMAT_VERSION:
        raise BundleError(f"{source}: format_version {version} is newer than this ada3d_edge reads "
                          f"(format_version {FORMAT_VERSION}); upgrade ada3d-edge or re-export the bundle")


def _entry(cls: type, data: Any, source: str, key: str) -> Any:
    if not isinstance(data, Mapping):
        raise BundleError(f"{source}: each {key!r} entry must be an object, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise BundleError(f"{source}: malformed {key!r} entry {dict(data)} ({exc})") from exc


def _check_plain_name(file: str, source: str) -> None:
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise BundleError(f"{source}: file name {file!r} must be a plain name inside the bundle directory")


# --- reading and writing ----------------------------------------------------------------------


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest) -> Path:
    """Validate and write ``manifest.json`` atomically (temp file in the same dir + os.replace)."""
    bundle_dir = Path(bundle_dir)
    manifest.validate(str(bundle_dir / MANIFEST_NAME))
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=bundle_dir)
    try:
        apply_umask(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, bundle_dir / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return bundle_dir / MANIFEST_NAME


def read_manifest(bundle_dir: str | os.PathLike) -> Manifest:
    """Parse ``manifest.json`` (JSON only) without checking the listed files."""
    path = _manifest_path(bundle_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); the manifest is corrupt, re-export") from exc
    return Manifest.from_dict(data, source=str(path))


def verify_file(bundle_dir: str | os.PathLike, entry: FileEntry, check_hash: bool = True) -> None:
    """Raise BundleError if the file is missing, has the wrong size or the wrong sha256."""
    path = Path(bundle_dir) / entry.file
    if not path.is_file():
        raise BundleError(f"{entry.file}: missing from bundle {bundle_dir} (listed in {MANIFEST_NAME}); "
                          "copy the whole bundle directory again or re-export")
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        what = "truncated" if size < entry.size else "larger than written"
        raise BundleError(f"{entry.file}: {what}: {size} bytes, manifest says {entry.size} bytes; "
                          "copy the bundle again or re-export")
    if check_hash:
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise BundleError(f"{entry.file}: sha256 mismatch, expected {entry.sha256[:12]}..., "
                              f"got {actual[:12]}... ({size} bytes); the file is truncated or modified, "
                              "copy the bundle again or re-export")


def open_bundle(path: str | os.PathLike, verify: bool = True) -> "Bundle":
    """Open a bundle directory (or its manifest.json).

    Always checks the format version and that every listed file exists (and its size when
    recorded); ``verify=True`` also checks every sha256.
    """
    root = _manifest_path(path).parent
    manifest = read_manifest(root)
    for entry in manifest.all_files():
        verify_file(root, entry, check_hash=verify)
    return Bundle(root=root, manifest=manifest)


def add_trt_engines(bundle_dir: str | os.PathLike, entries: Iterable[TrtEngineEntry]) -> Manifest:
    """Add TensorRT engines to the manifest atomically, verifying each new file.

    An entry replaces an older one with the same file name, or with the same model (policy, or
    segment and variant), GPU, TensorRT version and precision.
    """
    root = _manifest_path(bundle_dir).parent
    manifest = read_manifest(root)
    new = list(entries)
    for entry in new:
        verify_file(root, entry)

    def key(e: TrtEngineEntry) -> tuple:
        return (e.name, e.gpu_name, e.tensorrt_version, e.precision)

    replaced_files = {e.file for e in new}
    replaced_keys = {key(e) for e in new}
    kept = [e for e in manifest.trt_engines if e.file not in replaced_files and key(e) not in replaced_keys]
    manifest.trt_engines = kept + new
    write_manifest(root, manifest)
    return manifest


def _manifest_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no bundle manifest here; pass a directory written by `ada3d export`")
    return path


@dataclass
class Bundle:
    """An opened bundle: the manifest plus its directory."""

    root: Path
    manifest: Manifest

    @property
    def masks(self) -> list[str]:
        """Every stage mask the backbone serves, in manifest order."""
        return [c.mask for c in self.manifest.backbone.configs]

    @property
    def upper_mask(self) -> str:
        """The all-3D configuration ("Upper")."""
        return upper_mask(self.manifest.num_stages)

    @property
    def policy_path(self) -> Path:
        """Path to the selection network ONNX file."""
        return self.root / self.manifest.policy.file

    @property
    def backbone_path(self) -> Path:
        """Path to the one backbone graph (``clip``, ``stage_mask`` -> ``logits``)."""
        return self.root / self.manifest.backbone.file

    @property
    def weights_path(self) -> Path:
        """Path to the weights file every backbone ONNX file points into."""
        return self.root / self.manifest.backbone.weights.file

    def engine(self, mask: str) -> ConfigEntry:
        """The configuration entry (mask and cost) for ``mask``."""
        for entry in self.manifest.backbone.configs:
            if entry.mask == mask:
                return entry
        raise ValueError(f"no configuration for stage mask {mask!r}; valid masks: {self.masks}")

    config = engine

    def segment_variants(self, mask: str) -> list[tuple[SegmentEntry, SegmentVariantEntry]]:
        """The chain configuration ``mask`` runs in the segment layout: (segment, its variant) in order."""
        self.engine(mask)
        index = int(mask, 2)
        return [(seg, seg.variants[seg.choice[index]]) for seg in self.manifest.backbone.segments]

    def trt_engines(self, name: str) -> list[TrtEngineEntry]:
        """TensorRT plans built for ``"policy"`` or segment variant ``<segment>_v<i>`` (possibly several
        GPUs); may be empty."""
        return [e for e in self.manifest.trt_engines if e.name == name]

    def gflops(self, mask: str, num_kept_frames: int) -> float:
        """Backbone GFLOPs for ``mask`` on T' kept frames (``gflops_per_frame * T' + head_gflops``)."""
        t = self.manifest.num_frames
        if not 1 <= int(num_kept_frames) <= t:
            raise ValueError(f"num_kept_frames must be in 1..{t}, got {num_kept_frames}")
        entry = self.engine(mask)
        return entry.gflops_per_frame * int(num_kept_frames) + entry.head_gflops

    def policy_gflops(self, num_frames: int | None = None) -> float:
        """Selection-network GFLOPs on ``num_frames`` frames (default: the clip's T)."""
        t = self.manifest.num_frames if num_frames is None else int(num_frames)
        return self.manifest.policy.gflops_per_frame * t

    def mask_from_bools(self, bits: Sequence[bool]) -> str:
        """Stage mask string from K booleans (True = 3D)."""
        if len(bits) != self.manifest.num_stages:
            raise ValueError(f"need {self.manifest.num_stages} stage flags, got {len(bits)}")
        return mask_to_str(bits)
