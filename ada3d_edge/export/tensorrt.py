"""Build TensorRT engines (``*.plan``) from a bundle's ONNX files, on the target device.

TensorRT and cuda-python are imported lazily (``import ada3d_edge.export.tensorrt`` works without
them); a missing TensorRT gives an ImportError saying how to install it. One engine per stage
configuration plus the policy, one optimization profile (T' in [1, T], batch in [1, max_batch]),
one timing cache shared by all builds and kept in the bundle as ``timing.cache``.
Written for the TensorRT 10 Python API (explicit batch is implicit there; TensorRT 8 gets the flag).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Union

from ..bundle import (POLICY_NAME, Bundle, TrtEngineEntry, add_trt_engines, engine_name, open_bundle)
from ..runtime.backends.trt import INSTALL_HINT
from .profiles import EngineProfile, shape_profiles

TIMING_CACHE = "timing.cache"
PathLike = Union[str, Path]


def require_tensorrt() -> Any:
    """Import ``tensorrt`` or raise ImportError with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(f"building engines needs TensorRT's Python package, which is not installed: "
                          f"{INSTALL_HINT}") from exc
    return tensorrt


def _create_network(trt: Any, builder: Any) -> Any:
    major = int(str(trt.__version__).split(".")[0])
    if major >= 10:
        return builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


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
    if profile.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    if profile.precision == "int8":
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
    from ..runtime.backends.trt import engine_identity, import_cudart

    profile = profile.validate()
    trt = require_tensorrt()
    bundle: Bundle = open_bundle(bundle_dir)
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
    for key, onnx_path, kind in jobs:
        plan = root / f"{POLICY_NAME if kind == 'policy' else engine_name(key)}.plan"
        if progress:
            progress(f"building {plan.name} ({profile.precision}, max batch {profile.max_batch})")
        calibrator = None
        if profile.precision == "int8" and calib_list is not None:
            from .calibration import calibration_batches, make_calibrator

            calibrator = make_calibrator(trt, import_cudart(), calibration_batches(
                calib_list, m, kind, max_clips=calib_clips), 1, root / f"{plan.stem}.calib")
        try:
            timing = build_engine(trt, logger, onnx_path, plan, shapes[kind], profile, timing, calibrator)
        finally:
            if calibrator is not None:
                calibrator.free()
        cache_path.write_bytes(timing)
        entries.append(TrtEngineEntry.for_file(root, plan.name, mask=key, tensorrt_version=trt_version,
                                               gpu_name=gpu_name, precision=profile.precision,
                                               max_batch=profile.max_batch))
    add_trt_engines(root, entries)
    return entries
