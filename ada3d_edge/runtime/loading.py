"""Loading one bundle model into a backend: the one path the predictor and the benchmark share.

ONNX backends load the manifest's file. The TensorRT backend tries every plan recorded for the
model, in manifest order, and keeps the first built for this TensorRT version and GPU.
"""
from __future__ import annotations

import dataclasses

from ..bundle import (POLICY_FEATURES_NAME, POLICY_HEADS_NAME, POLICY_NAME, Bundle, BundleError, FileEntry,
                      engine_name)
from .backends.base import Backend, EngineMismatchError


def model_key(name: str) -> str:
    """``policy`` -> ``policy``; ``backbone_10`` -> ``10`` (the stage mask)."""
    return POLICY_NAME if name == POLICY_NAME else name.removeprefix("backbone_")


def bundle_model_names(bundle: Bundle) -> list[str]:
    """Every model of the bundle: the selection net, then one backbone per stage mask."""
    return [POLICY_NAME] + [engine_name(mask) for mask in bundle.masks]


def load_bundle_model(backend: Backend, bundle: Bundle, name: str) -> FileEntry:
    """Load model ``name`` of ``bundle`` into ``backend``; returns the manifest entry it loaded.

    Raises BundleError when the bundle has no plan for it (TensorRT), EngineMismatchError when none
    of its plans runs here.
    """
    key = model_key(name)
    if backend.file_kind != "plan":
        entry = bundle.manifest.policy if key == POLICY_NAME else bundle.engine(key)
        backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
        return entry
    candidates = bundle.trt_engines(key)
    if not candidates:
        raise BundleError(f"{bundle.root}: no TensorRT plan for {name!r}; run "
                          f"`ada3d build-engines {bundle.root}` on this device")
    reasons = []
    for entry in candidates:
        try:
            backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
            return entry
        except EngineMismatchError as exc:
            reasons.append(str(exc))
    raise EngineMismatchError(f"no usable TensorRT plan for {name!r}: " + " | ".join(reasons))


def load_policy_split(backend: Backend, bundle: Bundle) -> bool:
    """Load the split selection network (``policy_features``, ``policy_heads``) where it can run.

    Returns False, loading nothing, when the bundle predates the split or the backend does not load
    ONNX files (TensorRT plans are built for the whole ``policy``; PyTorch modules are registered
    by name): the caller then runs the whole ``policy``.
    """
    split = bundle.manifest.policy_split
    if split is None or backend.file_kind != "onnx":
        return False
    for name, entry in ((POLICY_FEATURES_NAME, split.features), (POLICY_HEADS_NAME, split.heads)):
        backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
    return True
