"""``export_bundle``: a checkpoint -> a verified bundle directory (format 2: policy, one backbone graph
serving every stage configuration from one weights file, its segment files, a flat graph per
configuration on the same weights, manifest).

Everything is written to a temporary sibling directory that is renamed into place at the end, so a
failed or interrupted export leaves no half bundle; a killed one leaves a temp dir that the next export
of the same target removes (``staging.py``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

from tqdm import tqdm

from .. import __version__
from ..bundle import (BackboneEntry, ConfigEntry, Manifest, PolicyEntry, PolicySplit, SegmentEntry,
                      SegmentVariantEntry, write_manifest)
from ..flops import backbone_macs, selection_macs
from ..masks import all_masks
from ..models.specs import BackboneSpec
from .fold_choice import BUDGET_S, MEASURE, resolve_folds, threads_from_env
from .layout_measure import LAYOUT_CHOICES, LayoutChoice, measure_layout
from .onnx_export import check_opset, export_policy, export_policy_split, fold_mode, head_bias, split_width
from .staging import check_target, clear_stale_temp_dirs, make_temp_dir, move_into_place
from .verify import verify_policy, verify_policy_split, verify_shared_backbone

PathLike = Union[str, Path]


def engine_cost(spec: BackboneSpec, mask: str, crop: int) -> Tuple[float, float]:
    """(GFLOPs per kept frame without the head, GFLOPs of the fc head): cost(T') = per_frame * T' + head.

    Convs cost exactly T' times one frame (no temporal stride); the head is paid once per clip.
    """
    head = spec.num_features * spec.num_classes / 1e9
    return backbone_macs(spec, mask, 1, crop) / 1e9 - head, head


def policy_gflops_per_frame(model: Any, num_frames: int, policy_size: int) -> float:
    """Selection-net GFLOPs per frame (MobileNetV2 per frame + its two heads spread over T frames)."""
    sel = model.selection
    macs = selection_macs(sel.spec, frames=num_frames, size=policy_size, num_stages=sel.num_stages,
                          num_frames_out=num_frames)
    return macs / num_frames / 1e9


def _versions(opset: int, fold: str) -> Dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    return {"ada3d_edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": int(opset),
            "exporter": "torch.onnx TorchScript (dynamo=False)", "fold_frames": fold}


def _data_fields(ckpt: Mapping[str, Any], model: Any, path: PathLike) -> Dict[str, Any]:
    """Manifest fields from the checkpoint's ``data`` dict; clear errors for what is missing."""
    data = dict(ckpt.get("data") or {})
    t = model.num_frames
    if int(data.get("num_frames", t)) != t:
        raise ValueError(f"{path}: data.num_frames={data['num_frames']} but the model takes T={t}")
    num_classes = model.backbone.num_classes
    classes = list(data.get("classes") or [f"class_{i}" for i in range(num_classes)])
    if len(classes) != num_classes:
        raise ValueError(f"{path}: {len(classes)} class names for a {num_classes}-class model")
    missing = [k for k in ("stride", "mean", "std") if k not in data]
    if missing:
        raise ValueError(f"{path}: checkpoint data lacks {missing}; re-save it with the trainer "
                         "(ckpt['data'] holds num_frames, stride, crop sizes, mean/std, classes)")
    crop = int(data.get("test_crop_size") or data.get("crop_size") or model.backbone.spec.crop_size)
    policy_size = int(data.get("policy_size") or model.selection.spec.policy_size)
    return {"num_frames": t, "stride": int(data["stride"]), "crop_size": crop, "policy_size": policy_size,
            "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]],
            "classes": [str(c) for c in classes], "multi_label": bool(data.get("multi_label", False)),
            "threshold": float(data.get("threshold", 0.5)),
            "short_side": int(data["short_side"]) if data.get("short_side") else None}


def backbone_entry(root: Path, info: Mapping[str, Any], masks: List[str], spec: BackboneSpec,
                    crop: int) -> BackboneEntry:
    """The manifest's ``backbone`` from ``save_backbone_files``' info, hashing every file."""
    segments = [SegmentEntry(s["name"], list(s["choice"]),
                             [SegmentVariantEntry.for_file(root, f, d, i)
                              for f, d, i in zip(s["files"], s["degraded"], s["inputs"])])
                for s in info["segments"]]
    configs = [ConfigEntry(mask, *engine_cost(spec, mask, crop)) for mask in masks]
    return BackboneEntry.for_files(root, info["graph"], info["weights"], configs, segments,
                                   bn_per_config=bool(info["per_config_bn"]), config_graphs=info.get("configs"))


def export_bundle(checkpoint: PathLike, out_dir: PathLike, opset: int = 17, verify: bool = True,
                  fold_frames: Union[bool, str] = True, overwrite: bool = False, progress: bool = True,
                  measure_seconds: float = BUDGET_S, local_weights: float | None = None,
                  ort_layout: str = "measure") -> Path:
    """Export a checkpoint to a bundle directory and return its path.

    Args:
        checkpoint: an ada3d checkpoint (``train/checkpoint.py``).
        out_dir: bundle directory to create; must be absent or empty unless ``overwrite``.
        opset: ONNX opset (>= 17).
        verify: check every file in ONNX Runtime against PyTorch (``verify.py``).
        fold_frames: which temporal-kernel-1 convs run as Conv2d over frames folded into the batch:
            True / "auto" (the 2D tail of each configuration), "all", False / "degraded" (only
            degraded stages), "none" (nothing; degraded stages as Conv3d(1, k, k)); see
            ``onnx_export.fold_plan``. "measure": per configuration, the faster of "auto" and "none"
            timed on this machine (``fold_choice``; what ``ada3d export`` does by default), recorded
            in the manifest's ``layout_choice``.
        measure_seconds: wall-time budget of that measurement (at least two rounds are timed).
        local_weights: share of the weight bytes whose segments keep their weights inside their
            ``If`` branches, so ORT's NCHWc pass runs there (``shared_graph.LOCAL_WEIGHTS_BUDGET`` when
            None; 0 = every weight in the outer scope). Recorded in ``layout_choice["local_weights"]``.
        ort_layout: the backbone layout ONNX Runtime runs by default (manifest ``ort_layout``): "graph"
            (the one ``If`` graph), "configs" (a flat graph per configuration on the same weights), or
            "measure": "configs" where it fits the memory budget and is faster here (``layout_measure``).
            The flat graphs are written in every case.
        overwrite: replace an existing non-empty ``out_dir`` if it is an ada3d bundle.
        progress: show a tqdm bar over the configurations verified.

    Checkpoints with per-configuration BatchNorm statistics (``bn_calibrated``) get a per-configuration
    scale/shift table after each BN'd conv (``shared_graph.config_affine``).
    """
    from ..train.checkpoint import load_model
    from .shared_graph import (LOCAL_WEIGHTS_BUDGET, build_shared_backbone, config_graphs, local_weight_segments,
                               save_backbone_files)

    if ort_layout not in LAYOUT_CHOICES:
        raise ValueError(f"unknown ONNX Runtime layout {ort_layout!r}; valid: {list(LAYOUT_CHOICES)}")
    opset = check_opset(opset)
    fold_frames = MEASURE if fold_frames == MEASURE else fold_mode(fold_frames)
    out_dir = Path(out_dir)
    clear_stale_temp_dirs(out_dir)  # left by killed exports of this target
    check_target(out_dir, overwrite)
    model, ckpt = load_model(checkpoint)
    backbone, spec = model.backbone, model.backbone.spec
    if spec.temporal_pool:
        raise ValueError(f"{checkpoint}: arch {spec.name} with temporal_pool=True cannot be exported: its "
                         "cost is not linear in T' and its T'<2 branch cannot be traced; use temporal_pool=False")
    fields = _data_fields(ckpt, model, checkpoint)
    t, crop, p = fields["num_frames"], fields["crop_size"], fields["policy_size"]
    masks: List[str] = all_masks(backbone.num_stages_3d)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir)
    try:
        export_policy(model, tmp / "policy.onnx", t, p, opset)
        if verify:
            verify_policy(tmp / "policy.onnx", model.selection, t, p)
        split_files = ("policy_features.onnx", "policy_heads.onnx")
        export_policy_split(model, *(tmp / f for f in split_files), p, opset)
        bias = head_bias(model.selection)
        if verify:
            verify_policy_split(*(tmp / f for f in split_files), model.selection, t, p, head_bias=bias)
        policy_split = PolicySplit.for_files(tmp, *split_files, split_width(model.selection), bias)
        local = LOCAL_WEIGHTS_BUDGET if local_weights is None else float(local_weights)
        folds, layout_choice = resolve_folds(backbone, crop, opset, t, fold_frames, measure_seconds, progress, local)
        graph, segments = build_shared_backbone(backbone, crop, opset, folds, num_frames=t, local_budget=local)
        layout_choice = {**layout_choice, "local_weights": {"budget": local, "segments": local_weight_segments(graph)}}
        flat = config_graphs(segments, backbone.num_stages_3d, backbone.num_classes, crop, opset)
        info = save_backbone_files(graph, segments, tmp, configs=flat)
        del graph, segments, flat
        flat_files = {m: tmp / c["file"] for m, c in info["configs"].items()}
        if verify:
            with tqdm(total=2 * len(masks), desc="verify", unit="graph", disable=not progress) as bar:
                verify_shared_backbone(tmp / info["graph"], backbone, masks, t, crop, progress=bar.update)
                verify_shared_backbone(flat_files, backbone, masks, t, crop, progress=bar.update)
        manifest = Manifest(
            arch=str(model.config.get("arch", spec.name)), stages=list(backbone.stage_names),
            policy=PolicyEntry.for_file(tmp, "policy.onnx", policy_gflops_per_frame(model, t, p)),
            backbone=backbone_entry(tmp, info, masks, spec, crop), policy_split=policy_split,
            versions=_versions(opset, fold_frames), layout_choice=layout_choice,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields)
        write_manifest(tmp, manifest)  # the layout's memory probes open the bundle: written first, then again
        if ort_layout == "measure":
            choice = measure_layout(tmp, tmp / info["graph"], flat_files, backbone.num_stages_3d, t, crop,
                                    threads_from_env(), measure_seconds, progress)
        else:
            choice = LayoutChoice(ort_layout, "fixed (ada3d export --ort-layout)")
        manifest = dataclasses.replace(
            manifest, backbone=dataclasses.replace(manifest.backbone, ort_layout=choice.layout),
            layout_choice={**manifest.layout_choice, "ort_layout": choice.to_dict()})
        write_manifest(tmp, manifest)
        check_target(out_dir, overwrite)  # again: the target may have changed during the export
        move_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
