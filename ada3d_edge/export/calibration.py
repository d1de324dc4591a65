"""INT8 calibration data: centre clips of the videos in a list file, preprocessed exactly as at run time.

``calibration_batches`` is pure numpy/OpenCV (testable anywhere); ``make_calibrator`` wraps it in a
TensorRT ``IInt8EntropyCalibrator2`` that copies each batch to the GPU with cuda-python.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

import numpy as np

from .. import preprocess
from ..bundle import Manifest
from ..trt_api import cuda_call

PathLike = Union[str, Path]


def calibration_batches(list_file: PathLike, manifest: Manifest, kind: str = "backbone",
                        root: Optional[PathLike] = None, max_clips: int = 64,
                        batch_size: int = 1) -> Iterator[np.ndarray]:
    """Yield float32 batches from the centre clip of each video in ``list_file``.

    Args:
        list_file: ``path label`` lines (the training list format); paths relative to ``root``
            (default: the list file's folder).
        manifest: the bundle's manifest (T, stride, crop, policy size, mean/std).
        kind: "backbone" -> ``(B, 3, T, S, S)`` clips; "policy" -> ``(B, 3, T, P, P)``.
        max_clips: stop after this many clips.
    """
    from ..data.lists import load_list
    from ..data.video import read_center_clip

    if kind not in ("backbone", "policy"):
        raise ValueError(f"kind must be 'backbone' or 'policy', got {kind!r}")
    root = Path(list_file).parent if root is None else Path(root)
    records = load_list(list_file, root, list_option="--calib")[: max(int(max_clips), 1)]
    m = manifest
    batch: List[np.ndarray] = []
    for rec in records:
        frames = read_center_clip(rec.path, m.num_frames, m.stride)
        crops = preprocess.center_crop_frames(frames, m.crop_size, m.short_side)
        x = (preprocess.to_clip_tensor(crops, m.mean, m.std) if kind == "backbone"
             else preprocess.to_policy_tensor(crops, m.policy_size, m.mean, m.std))
        batch.append(x)
        if len(batch) == batch_size:
            yield np.ascontiguousarray(np.stack(batch))
            batch = []


def segment_calibration_batches(bundle: Any, segment: int, variant: int, list_file: PathLike,
                                max_clips: int = 64) -> Iterator[np.ndarray]:
    """INT8 calibration inputs of one segment variant: the calibration clips run through the segments
    before it (in ONNX Runtime, CPU), as the first configuration that uses this variant chains them."""
    segments = bundle.manifest.backbone.segments
    index = segments[segment].choice.index(variant)
    clips = calibration_batches(list_file, bundle.manifest, "backbone", max_clips=max_clips)
    if segment == 0:
        yield from clips
        return
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(bundle.root / seg.variants[seg.choice[index]].file),
                                     providers=["CPUExecutionProvider"]) for seg in segments[:segment]]
    for x in clips:
        for sess in sessions:
            x = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        yield np.ascontiguousarray(x, dtype=np.float32)


def make_calibrator(trt: Any, cudart: Any, batches: Iterator[np.ndarray], batch_size: int,
                    cache_file: PathLike) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (device memory via cuda-python)."""
    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._device: Optional[int] = None
            self._nbytes = 0
            self.cache_file = Path(cache_file)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            try:
                x = next(self._batches)
            except StopIteration:
                return None
            if self._device is None or x.nbytes > self._nbytes:
                if self._device is not None:
                    cudart.cudaFree(self._device)
                self._device, self._nbytes = int(cuda_call(cudart.cudaMalloc(x.nbytes))), x.nbytes
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            cuda_call(cudart.cudaMemcpy(self._device, x.ctypes.data, x.nbytes, kind))
            return [self._device]

        def read_calibration_cache(self) -> Optional[bytes]:
            return self.cache_file.read_bytes() if self.cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache_file.write_bytes(bytes(cache))

        def free(self) -> None:
            if self._device is not None:
                cudart.cudaFree(self._device)
                self._device = None

    return _Calibrator()
