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


def make_calibrator(trt: Any, cudart: Any, batches: Iterator[np.ndarray], batch_size: int,
                    cache_file: PathLike) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (device memory via cuda-python)."""
    from ..runtime.backends.trt import _cuda_call

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
                self._device, self._nbytes = int(_cuda_call(cudart.cudaMalloc(x.nbytes))), x.nbytes
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _cuda_call(cudart.cudaMemcpy(self._device, x.ctypes.data, x.nbytes, kind))
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
