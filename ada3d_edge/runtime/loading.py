"""Loading one bundle model into a backend: the one path the predictor and the benchmark share.

ONNX backends load the manifest's file: for the backbone (``backbone``), the one graph that serves
every stage configuration (a configuration is its ``stage_mask`` feed). The TensorRT backend tries
every plan recorded for the selection net, in manifest order, and keeps the first built for this
TensorRT version and GPU; its backbone is a chain of segment plans, loaded by the backend's
``load_bundle_backbone(bundle)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..bundle import (BACKBONE_NAME, POLICY_FEATURES_NAME, POLICY_HEADS_NAME, POLICY_NAME, Bundle, BundleError,
                      FileEntry)
from .backends.base import Backend, EngineMismatchError


def bundle_model_names(bundle: Bundle) -> list[str]:
    """Every model of the bundle: the selection net, then the backbone (all configurations)."""
    return [POLICY_NAME, BACKBONE_NAME]


def load_bundle_model(backend: Backend, bundle: Bundle, name: str) -> FileEntry:
    """Load model ``name`` of ``bundle`` into ``backend``; returns the manifest entry it loaded.

    Raises BundleError when the bundle has no plan for it (TensorRT), EngineMismatchError when none
    of its plans runs here.
    """
    if name not in (POLICY_NAME, BACKBONE_NAME):
        raise ValueError(f"unknown bundle model {name!r}; expected {POLICY_NAME!r} or {BACKBONE_NAME!r}")
    if name == BACKBONE_NAME and getattr(backend, "loads_backbone_from_bundle", False):  # ort: its layout decides
        return backend.load_bundle_backbone(bundle)
    if backend.file_kind != "plan":
        entry = bundle.manifest.policy if name == POLICY_NAME else bundle.manifest.backbone
        backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
        return entry
    if name == BACKBONE_NAME:
        load = getattr(backend, "load_bundle_backbone", None)
        if load is None:
            raise BundleError(f"the {backend.kind} backend cannot chain the backbone's segment plans; "
                              "use the 'ort' backend")
        return load(bundle)
    return load_first_usable_plan(backend, bundle, POLICY_NAME, name)


def load_first_usable_plan(backend: Backend, bundle: Bundle, plan_name: str, model_name: str,
                           what: str = "") -> Any:
    """Load into ``backend`` (as ``model_name``) the first TensorRT plan recorded for ``plan_name``
    that runs on this TensorRT version and GPU, in manifest order; returns its manifest entry.

    The one place plans are chosen: the selection net here, each backbone segment in the TensorRT
    backend's chain (``what="segment"`` names it so in the errors).
    """
    label = f"{what} {plan_name!r}" if what else repr(plan_name)
    candidates = bundle.trt_engines(plan_name)
    if not candidates:
        raise BundleError(f"{bundle.root}: no TensorRT plan for {label}; run "
                          f"`ada3d build-engines {bundle.root}` on this device")
    reasons = []
    for entry in candidates:
        try:
            backend.load(model_name, bundle.root / entry.file, dataclasses.asdict(entry))
            return entry
        except EngineMismatchError as exc:
            reasons.append(str(exc))
    raise EngineMismatchError(f"no usable TensorRT plan for {label}: " + " | ".join(reasons))


def load_policy_split(backend: Backend, bundle: Bundle) -> bool:
    """Load the split selection network (``policy_features``, ``policy_heads``) where it can run.

    Returns False, loading nothing, when the bundle predates the split or the backend does not load
    ONNX files (TensorRT plans are built for the whole ``policy``; PyTorch modules are registered
    by name): the caller then runs the whole ``policy``. ``policy_heads`` is not loaded when the
    manifest records the heads' bias (``split_heads.SplitHeads`` computes them in numpy).
    """
    split = bundle.manifest.policy_split
    if split is None or backend.file_kind != "onnx":
        return False
    files = [(POLICY_FEATURES_NAME, split.features)]
    if split.head_bias is None:
        files.append((POLICY_HEADS_NAME, split.heads))
    for name, entry in files:
        backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
    return True
