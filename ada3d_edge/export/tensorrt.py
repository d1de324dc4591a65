"""Build TensorRT engines (``*.plan``) from a bundle's ONNX files, on the target device.

TensorRT and cuda-python are imported lazily (``import ada3d_edge.export.tensorrt`` works without
them); a missing TensorRT gives an ImportError saying how to install it. Bundle format 2
(docs/shared-weights.md section 7): one engine per segment variant (``<segment>_v<i>.onnx``, whose
external data resolves to ``backbone.weights`` beside it) plus the policy, each with one
optimization profile (batch in [1, max_batch], T' in [1, T]; a segment's boundary shape read from
its ONNX input), and one timing cache shared by all builds, kept in the bundle as ``timing.cache``.
The runtime chains the segment engines of a configuration (``runtime/backends/trt.py``).

Two builder paths, chosen by TensorRT's major version:
- TensorRT 10 (JetPack 6 ships 10.3): the FP32 ONNX with ``BuilderFlag.FP16`` / ``INT8`` and an
  entropy calibrator fed by ``--calib`` (TensorRT 8 also gets the explicit-batch flag).
- TensorRT 11 (what ``pip install tensorrt`` gives) removed those flags and the calibrator: networks
  are strongly typed and take their precision from the ONNX graph, so ``--fp16`` builds from an FP16
  copy of each ONNX file (``fp16.py``: float32 I/O and heads, checked in ONNX Runtime first; a file
  whose copy strays too far is built FP32 and recorded so), and ``--int8`` is refused with what to do.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..bundle import (BACKBONE_MASK_INPUT, POLICY_NAME, SEGMENT_INPUT, Bundle, TrtEngineEntry, add_trt_engines,
                      open_bundle, segment_model_name)
from ..trt_api import engine_identity, import_cudart, import_tensorrt, parse_cuda_device, tensorrt_major
from .fp16 import Fp16ConversionError, check_fp16, convert_to_fp16
from .profiles import EngineProfile, segment_shape_profile, shape_profiles

TIMING_CACHE = "timing.cache"
PathLike = Union[str, Path]


def require_tensorrt() -> Any:
    """Import ``tensorrt`` or raise ImportError with the install hint."""
    return import_tensorrt("building engines")


def strongly_typed(trt: Any) -> bool:
    """True where precision comes from the ONNX graph, not from builder flags (TensorRT >= 11)."""
    return tensorrt_major(trt) >= 11


def _create_network(trt: Any, builder: Any) -> Any:
    major = tensorrt_major(trt)
    if major >= 11:  # always strongly typed; the flag is kept (ignored) where the bindings still have it
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return builder.create_network(0 if flag is None else 1 << int(flag))
    if major >= 10:
        return builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def check_precision_supported(trt: Any, precision: str) -> None:
    """Refuse what this TensorRT cannot build, before any engine is built."""
    if precision == "int8" and strongly_typed(trt):
        raise ValueError(
            f"--int8: TensorRT {trt.__version__} builds INT8 only from explicit Q/DQ nodes (TensorRT 11 removed "
            "BuilderFlag.INT8 and calibrators); build --fp16 here, or build --int8 --calib LIST with TensorRT 10 "
            "(JetPack 6 ships 10.3; on a desktop `pip install 'tensorrt<11'`)")


def fp16_onnx(src: Path, dst: Path, shapes: Dict[str, Tuple[tuple, tuple, tuple]]) -> Path:
    """FP16 copy of ``src`` for a strongly typed build, checked against ``src`` at the opt shapes."""
    convert_to_fp16(src, dst)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(opt).astype(np.float32) for name, (_, opt, _) in shapes.items()}
    check_fp16(src, dst, feeds)
    return dst


def _parse_onnx(trt: Any, network: Any, logger: Any, path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {path.name}: {errors or 'unknown error'}")
    return parser


def build_engine(trt: Any, logger: Any, onnx_path: Path, plan_path: Path, shapes: dict,
                 profile: EngineProfile, timing_cache: Optional[bytes],
                 calibrator: Optional[Any] = None) -> bytes:
    """Build one plan file; returns the timing cache (serialized) to pass to the next build."""
    builder = trt.Builder(logger)
    network = _create_network(trt, builder)
    parser = _parse_onnx(trt, network, logger, onnx_path)  # must outlive the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_bytes)
    typed = strongly_typed(trt)  # TensorRT 11: the precision is the ONNX graph's, no flags
    if profile.precision in ("fp16", "int8") and not typed:
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    if profile.precision == "int8":
        check_precision_supported(trt, profile.precision)
        if calibrator is None:
            raise ValueError("int8 needs calibration data: pass --calib LIST (videos in list-file format)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        calib_profile = builder.create_optimization_profile()
        for name, (_, opt, _) in shapes.items():
            fixed = (1,) + tuple(opt[1:])
            calib_profile.set_shape(name, fixed, fixed, fixed)
        config.set_calibration_profile(calib_profile)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    del parser
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path.name} from {onnx_path.name} "
                           f"({profile.precision}, workspace {profile.workspace_mb} MB); see the log above")
    plan_path.write_bytes(bytes(serialized))
    return bytes(config.get_timing_cache().serialize())


@dataclass(frozen=True)
class BuildJob:
    """One engine to build: its model name, ONNX source, input shapes and manifest fields."""

    name: str  # "policy" or "<segment>_v<i>"
    onnx_path: Path
    shapes: Dict[str, Tuple[tuple, tuple, tuple]]
    fields: Dict[str, Any]  # model / segment / variant of its TrtEngineEntry
    calib_segment: Optional[Tuple[int, int]] = None  # (segment index, variant) for INT8 calibration

    @property
    def plan_name(self) -> str:
        return f"{self.name}.plan"


def onnx_input_dims(path: Path) -> Dict[str, list]:
    """Input name -> dims (int, or the symbol / None of a dynamic axis), read without the weights."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("build-engines reads the segment files' input shapes with onnx: `pip install onnx` "
                          "(in `pip install ada3d-edge[trt]`)") from exc
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in initializers}


def build_jobs(bundle: Bundle, profile: EngineProfile) -> List[BuildJob]:
    """The policy, then every variant of every backbone segment, in manifest order."""
    m = bundle.manifest
    jobs = [BuildJob(POLICY_NAME, bundle.policy_path, shape_profiles(m, profile.max_batch, profile.opt_batch)["policy"],
                     {"model": POLICY_NAME})]
    for s, seg in enumerate(m.backbone.segments):
        for v, variant in enumerate(seg.variants):
            path = bundle.root / variant.file
            if BACKBONE_MASK_INPUT in variant.inputs:
                raise ValueError(f"{path.name}: this segment takes {BACKBONE_MASK_INPUT!r} (per-configuration "
                                 "BatchNorm statistics), which the TensorRT engines do not support yet; run this "
                                 "bundle with --backend ort, or train with `--set bn_calibration.batches=0` and "
                                 "export again")
            dims = onnx_input_dims(path)
            if list(dims) != [SEGMENT_INPUT]:
                raise ValueError(f"{path.name}: a segment file takes one input {SEGMENT_INPUT!r}, this one takes "
                                 f"{list(dims)}; re-export the bundle with `ada3d export`")
            shapes = {SEGMENT_INPUT: segment_shape_profile(SEGMENT_INPUT, dims[SEGMENT_INPUT], m.num_frames,
                                                           profile.max_batch, profile.opt_batch, path.name)}
            jobs.append(BuildJob(segment_model_name(seg.name, v), path, shapes,
                                 {"model": "segment", "segment": seg.name, "variant": v}, (s, v)))
    return jobs


def build_engines(bundle_dir: PathLike, profile: EngineProfile, calib_list: Optional[PathLike] = None,
                  calib_clips: int = 64, device: str = "cuda",
                  progress: Optional[Callable[[str], None]] = None) -> List[TrtEngineEntry]:
    """Build ``policy.plan`` and ``<segment>_v<i>.plan`` for every segment variant; record them in the manifest.

    Returns the new manifest entries (each with TensorRT version, GPU name, precision, max batch).
    Logs each engine's build time and size, and the totals.
    """
    profile = profile.validate()
    try:
        parse_cuda_device(device)
    except ValueError:
        raise ValueError(f"--device {device!r}: engines are built on a CUDA device, cuda or cuda:N") from None
    bundle: Bundle = open_bundle(bundle_dir)  # bad inputs are named before TensorRT is needed
    if calib_list is not None:
        from ..data.lists import load_list

        load_list(calib_list, Path(calib_list).parent, list_option="--calib")
    jobs = build_jobs(bundle, profile)
    trt = require_tensorrt()
    check_precision_supported(trt, profile.precision)
    trt_version, gpu_name = engine_identity(device)
    root = bundle.root
    cache_path = root / TIMING_CACHE
    timing = cache_path.read_bytes() if cache_path.is_file() else None
    logger = trt.Logger(trt.Logger.WARNING)
    entries: List[TrtEngineEntry] = []
    total_s, total_bytes = 0.0, 0
    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="ada3d-build-") as work:  # FP16 copies of the ONNX files
        for job in jobs:
            plan = root / job.plan_name
            say(f"building {plan.name} from {job.onnx_path.name} ({profile.precision}, max batch {profile.max_batch})")
            precision, onnx_path = profile.precision, job.onnx_path
            if precision == "fp16" and strongly_typed(trt):
                try:
                    onnx_path = fp16_onnx(onnx_path, Path(work) / onnx_path.name, job.shapes)
                except Fp16ConversionError as exc:  # too far from FP32: this file is built FP32
                    precision = "fp32"
                    say(f"{exc}; building {plan.name} in FP32")
            t0 = time.perf_counter()
            timing = _build_one(trt, logger, onnx_path, plan, job, replace(profile, precision=precision),
                                timing, calib_list, calib_clips, bundle)
            seconds = time.perf_counter() - t0
            cache_path.write_bytes(timing)  # one cache for the bundle: each build starts from the last
            size = plan.stat().st_size
            total_s, total_bytes = total_s + seconds, total_bytes + size
            say(f"built {plan.name}: {seconds:.1f} s, {size / 2 ** 20:.2f} MiB")
            entries.append(TrtEngineEntry.for_file(root, plan.name, **job.fields, tensorrt_version=trt_version,
                                                   gpu_name=gpu_name, precision=precision,
                                                   max_batch=profile.max_batch))
    say(f"{len(entries)} engines ({len(entries) - 1} segment variants + policy) in {total_s:.1f} s, "
        f"{total_bytes / 2 ** 20:.2f} MiB")
    add_trt_engines(root, entries)
    return entries


def _build_one(trt: Any, logger: Any, onnx_path: Path, plan: Path, job: BuildJob, profile: EngineProfile,
               timing: Optional[bytes], calib_list: Optional[PathLike], calib_clips: int, bundle: Bundle) -> bytes:
    """One engine, with its INT8 calibrator (TensorRT 10) made and freed around the build."""
    calibrator = None
    if profile.precision == "int8" and calib_list is not None:
        from .calibration import calibration_batches, make_calibrator, segment_calibration_batches

        if job.calib_segment is None:
            batches = calibration_batches(calib_list, bundle.manifest, "policy", max_clips=calib_clips)
        else:
            batches = segment_calibration_batches(bundle, *job.calib_segment, calib_list, max_clips=calib_clips)
        calibrator = make_calibrator(trt, import_cudart(), batches, 1, plan.with_suffix(".calib"))
    try:
        return build_engine(trt, logger, onnx_path, plan, job.shapes, profile, timing, calibrator)
    finally:
        if calibrator is not None:
            calibrator.free()
