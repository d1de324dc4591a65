"""Build TensorRT engines (``*.plan``) from a bundle's ONNX files, on the target device.

TensorRT and cuda-python are imported lazily (``import ada3d_edge.export.tensorrt`` works without
them); a missing TensorRT gives an ImportError saying how to install it. One engine per stage
configuration plus the policy, one optimization profile (T' in [1, T], batch in [1, max_batch]),
one timing cache shared by all builds and kept in the bundle as ``timing.cache``.

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
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..bundle import (POLICY_NAME, Bundle, TrtEngineEntry, add_trt_engines, engine_name, open_bundle)
from ..trt_api import engine_identity, import_cudart, import_tensorrt, parse_cuda_device, tensorrt_major
from .fp16 import Fp16ConversionError, check_fp16, convert_to_fp16
from .profiles import EngineProfile, shape_profiles

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


def build_engines(bundle_dir: PathLike, profile: EngineProfile, calib_list: Optional[PathLike] = None,
                  calib_clips: int = 64, device: str = "cuda",
                  progress: Optional[Callable[[str], None]] = None) -> List[TrtEngineEntry]:
    """Build ``policy.plan`` and ``backbone_<mask>.plan`` for every configuration; record them in the manifest.

    Returns the new manifest entries (each with TensorRT version, GPU name, precision, max batch).
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
    trt = require_tensorrt()
    check_precision_supported(trt, profile.precision)
    trt_version, gpu_name = engine_identity(device)
    m = bundle.manifest
    shapes = shape_profiles(m, profile.max_batch, profile.opt_batch)
    root = bundle.root
    cache_path = root / TIMING_CACHE
    timing = cache_path.read_bytes() if cache_path.is_file() else None
    logger = trt.Logger(trt.Logger.WARNING)
    jobs = [(POLICY_NAME, bundle.policy_path, "policy")]
    jobs += [(mask, bundle.engine_path(mask), "backbone") for mask in bundle.masks]
    entries: List[TrtEngineEntry] = []
    with tempfile.TemporaryDirectory(prefix="ada3d-build-") as work:  # FP16 copies of the ONNX files
        for key, onnx_path, kind in jobs:
            plan = root / f"{POLICY_NAME if kind == 'policy' else engine_name(key)}.plan"
            if progress:
                progress(f"building {plan.name} ({profile.precision}, max batch {profile.max_batch})")
            precision = profile.precision
            if precision == "fp16" and strongly_typed(trt):
                try:
                    onnx_path = fp16_onnx(onnx_path, Path(work) / onnx_path.name, shapes[kind])
                except Fp16ConversionError as exc:  # too far from FP32: this file is built FP32
                    precision = "fp32"
                    if progress:
                        progress(f"{exc}; building {plan.name} in FP32")
            timing = _build_one(trt, logger, onnx_path, plan, shapes[kind], replace(profile, precision=precision),
                                timing, calib_list, calib_clips, m, kind)
            cache_path.write_bytes(timing)  # one cache for the bundle: each build starts from the last
            entries.append(TrtEngineEntry.for_file(root, plan.name, mask=key, tensorrt_version=trt_version,
                                                   gpu_name=gpu_name, precision=precision,
                                                   max_batch=profile.max_batch))
    add_trt_engines(root, entries)
    return entries


def _build_one(trt: Any, logger: Any, onnx_path: Path, plan: Path, shapes: dict, profile: EngineProfile,
               timing: Optional[bytes], calib_list: Optional[PathLike], calib_clips: int, m: Any,
               kind: str) -> bytes:
    """One engine, with its INT8 calibrator (TensorRT 10) made and freed around the build."""
    calibrator = None
    if profile.precision == "int8" and calib_list is not None:
        from .calibration import calibration_batches, make_calibrator

        calibrator = make_calibrator(trt, import_cudart(), calibration_batches(
            calib_list, m, kind, max_clips=calib_clips), 1, plan.with_suffix(".calib"))
    try:
        return build_engine(trt, logger, onnx_path, plan, shapes, profile, timing, calibrator)
    finally:
        if calibrator is not None:
            calibrator.free()
