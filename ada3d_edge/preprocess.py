"""Frame preprocessing and clip sampling shared by training, evaluation, export checks and the runtime.

numpy + OpenCV only: this module never imports torch (the runtime on the device imports it).

Frames are ``(T, H, W, 3) uint8 RGB``. Evaluation (and the runtime) resize the short side and take a
centre crop (`center_crop_frames`); training takes a random short side, a random crop and a random
horizontal flip, the same for every frame of a clip (`random_resized_crop_frames`). Both give uint8
crops that `to_clip_tensor` / `to_policy_tensor` turn into normalised channels-first float32 arrays.

Temporal sampling follows PySlowFast: a clip of ``num_frames`` frames ``stride`` apart starting at
``start`` (`clip_indices`); training draws one random start (`random_clip_start`), testing spreads
``num_clips`` starts uniformly over the video (`uniform_clip_starts`).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

KINETICS_MEAN: Tuple[float, float, float] = (0.45, 0.45, 0.45)
KINETICS_STD: Tuple[float, float, float] = (0.225, 0.225, 0.225)

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "center_crop_frames",
    "random_resized_crop_frames",
    "to_clip_tensor",
    "to_policy_tensor",
    "to_policy_frames",
    "preprocess_eval",
    "clip_indices",
    "random_clip_start",
    "uniform_clip_starts",
]


# --- spatial ---------------------------------------------------------------------------------------

def _check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name} must be (T, H, W, 3) RGB with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got dtype {frames.dtype}; "
                         f"convert with frames.astype(np.uint8) after clipping to 0..255")
    return frames


def _check_positive(value: int, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize every frame so its short side is ``short_side`` (aspect kept, cv2.INTER_LINEAR)."""
    t, h, w, _ = frames.shape
    if min(h, w) == short_side:
        return frames
    if h <= w:
        new_h, new_w = short_side, max(short_side, int(round(w * short_side / h)))
    else:
        new_h, new_w = max(short_side, int(round(h * short_side / w))), short_side
    out = np.empty((t, new_h, new_w, 3), dtype=np.uint8)
    for i in range(t):
        out[i] = cv2.resize(frames[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out


def center_crop_frames(frames: np.ndarray, crop_size: int,
                       short_side: Optional[int] = None) -> np.ndarray:
    """Resize the short side to ``short_side or crop_size`` (INTER_LINEAR), then centre-crop.

    Args:
        frames: ``(T, H, W, 3) uint8 RGB``.
        crop_size: side of the square crop.
        short_side: short side after resizing; must be >= ``crop_size``. Defaults to ``crop_size``.

    Returns:
        ``(T, crop_size, crop_size, 3) uint8``.
    """
    frames = _check_frames(frames)
    crop_size = _check_positive(crop_size, "crop_size")
    short_side = crop_size if short_side is None else _check_positive(short_side, "short_side")
    if short_side < crop_size:
        raise ValueError(f"short_side={short_side} is smaller than crop_size={crop_size}; "
                         f"pass short_side >= crop_size (or None)")
    resized = _resize_short_side(frames, short_side)
    h, w = resized.shape[1:3]
    y0, x0 = (h - crop_size) // 2, (w - crop_size) // 2
    return np.ascontiguousarray(resized[:, y0:y0 + crop_size, x0:x0 + crop_size])


def random_resized_crop_frames(frames: np.ndarray, crop_size: int,
                               short_side_range: Tuple[int, int] = (256, 320), flip: bool = True,
                               rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Training augmentation: random short-side scale, random square crop, random horizontal flip.

    One draw per clip, applied to every frame (PySlowFast's short-side jitter + random crop + flip).

    Args:
        frames: ``(T, H, W, 3) uint8 RGB``.
        crop_size: side of the square crop.
        short_side_range: inclusive ``(min, max)`` for the resized short side; ``min >= crop_size``.
        flip: flip horizontally with probability 0.5. Turn off when left/right carries the label
            (the synthetic dataset's ``move_left``/``move_right``, ``rotate_cw``/``rotate_ccw``).
        rng: random generator; a fresh unseeded one when None.

    Returns:
        ``(T, crop_size, crop_size, 3) uint8``.
    """
    frames = _check_frames(frames)
    crop_size = _check_positive(crop_size, "crop_size")
    lo, hi = (int(v) for v in short_side_range)
    if not crop_size <= lo <= hi:
        raise ValueError(f"short_side_range={tuple(short_side_range)} must satisfy "
                         f"crop_size ({crop_size}) <= min <= max")
    rng = np.random.default_rng() if rng is None else rng
    resized = _resize_short_side(frames, int(rng.integers(lo, hi + 1)))
    h, w = resized.shape[1:3]
    y0 = int(rng.integers(0, h - crop_size + 1))
    x0 = int(rng.integers(0, w - crop_size + 1))
    out = resized[:, y0:y0 + crop_size, x0:x0 + crop_size]
    if flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def _norm_arrays(mean: Sequence[float], std: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.shape != (3,) or s.shape != (3,):
        raise ValueError(f"mean and std need 3 values (RGB), got mean={list(m)} std={list(s)}")
    if np.any(s <= 0):
        raise ValueError(f"std values must be > 0, got {list(s)}")
    return m, s


@functools.lru_cache(maxsize=32)
def _normalise_table(mean: Tuple[float, ...], std: Tuple[float, ...]) -> np.ndarray:
    """``(3, 256) float32``: entry ``[c, v]`` is ``(v * float32(1/255) - mean[c]) / std[c]``.

    The same float32 operations as normalising each pixel, done once for the 256 values a uint8
    can take: a lookup then gives bit-identical results in one pass (measured 5x faster than
    cast, scale, subtract, divide and transpose on a demo clip, benchmarks/results/fixed_costs_cpu.md).
    """
    m, s = _norm_arrays(mean, std)
    v = np.arange(256, dtype=np.float32)[:, None] * np.float32(1.0 / 255.0)
    table = np.ascontiguousarray(((v - m) / s).T)
    table.setflags(write=False)
    return table


def _normalise_into(out_channels: Sequence[np.ndarray], crops: np.ndarray, mean: Sequence[float],
                    std: Sequence[float]) -> None:
    """Write channel ``c`` of the uint8 ``crops`` ``(..., h, w, 3)``, normalised, into ``out_channels[c]``.

    ``cv2.split`` then one ``cv2.LUT`` per channel (uint8 -> float32 table): the same table values
    in 0.55-0.65x the time of ``np.take`` on a demo clip, which first widens the uint8 indices to
    int64 (benchmarks/results/fixed_costs_cpu.md, section 1b). A channel view that is not contiguous is filled from a
    temporary.
    """
    table = _normalise_table(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    w = crops.shape[-2]
    planes = cv2.split(np.ascontiguousarray(crops).reshape(-1, w, 3))
    for c in range(3):
        dst = out_channels[c]
        if dst.flags.c_contiguous:
            cv2.LUT(planes[c], table[c], dst=dst.reshape(-1, w))
        else:
            dst[...] = cv2.LUT(planes[c], table[c]).reshape(dst.shape)


def to_clip_tensor(crops: np.ndarray, mean: Sequence[float] = KINETICS_MEAN,
                   std: Sequence[float] = KINETICS_STD) -> np.ndarray:
    """``(T, h, w, 3) uint8`` -> ``(3, T, h, w) float32``: /255, (x - mean) / std, channels first.

    ``crops`` may be a strided view (a crop or a frame subset of a larger array): it is read once.
    """
    crops = _check_frames(crops, "crops")
    t, h, w, _ = crops.shape
    out = np.empty((3, t, h, w), dtype=np.float32)
    _normalise_into(out, crops, mean, std)
    return out


def _resize_square(crops: np.ndarray, p: int) -> np.ndarray:
    """Each crop resized to ``p x p`` (cv2.INTER_AREA); the crops themselves when already that size.

    When ``p`` divides both sides (the demo's 64 -> 32, 224 -> 112), INTER_AREA averages whole
    blocks that never cross a frame, so the T frames stacked as one tall image give the same pixels
    in one call instead of T (tests/test_preprocess.py).
    """
    t, h, w, _ = crops.shape
    if (h, w) == (p, p):
        return crops
    if h % p == 0 and w % p == 0:
        tall = np.ascontiguousarray(crops).reshape(t * h, w, 3)
        return cv2.resize(tall, (p, t * p), interpolation=cv2.INTER_AREA).reshape(t, p, p, 3)
    small = np.empty((t, p, p, 3), dtype=np.uint8)
    for i in range(t):
        small[i] = cv2.resize(crops[i], (p, p), interpolation=cv2.INTER_AREA)
    return small


def to_policy_tensor(crops: np.ndarray, policy_size: int, mean: Sequence[float] = KINETICS_MEAN,
                     std: Sequence[float] = KINETICS_STD) -> np.ndarray:
    """Selection-network input: each crop resized to ``policy_size`` (INTER_AREA), normalised.

    Returns:
        ``(3, T, policy_size, policy_size) float32``.
    """
    crops = _check_frames(crops, "crops")
    return to_clip_tensor(_resize_square(crops, _check_positive(policy_size, "policy_size")), mean, std)


def to_policy_frames(crops: np.ndarray, policy_size: int, mean: Sequence[float] = KINETICS_MEAN,
                     std: Sequence[float] = KINETICS_STD) -> np.ndarray:
    """``to_policy_tensor`` frame-major, for the per-frame half of the split selection network.

    Returns:
        ``(N, 3, policy_size, policy_size) float32``: the same values as
        ``to_policy_tensor(crops, ...).transpose(1, 0, 2, 3)``, written without the transpose copy.
    """
    crops = _check_frames(crops, "crops")
    p = _check_positive(policy_size, "policy_size")
    small = _resize_square(crops, p)
    out = np.empty((small.shape[0], 3, p, p), dtype=np.float32)
    _normalise_into([out[:, c] for c in range(3)], small, mean, std)
    return out


def preprocess_eval(frames: np.ndarray, crop_size: int, policy_size: int,
                    mean: Sequence[float] = KINETICS_MEAN,
                    std: Sequence[float] = KINETICS_STD) -> Tuple[np.ndarray, np.ndarray]:
    """Evaluation/runtime preprocessing of one clip.

    Returns:
        ``(clip, policy)``: ``(3, T, crop, crop)`` and ``(3, T, policy_size, policy_size)`` float32.
    """
    crops = center_crop_frames(frames, crop_size)
    return to_clip_tensor(crops, mean, std), to_policy_tensor(crops, policy_size, mean, std)


# --- temporal --------------------------------------------------------------------------------------

def _clip_span(num_frames: int, stride: int) -> int:
    """Number of video frames a clip covers: first to last sampled frame inclusive."""
    return (num_frames - 1) * stride + 1


def _check_sampling(num_video_frames: int, num_frames: int, stride: int) -> None:
    if int(num_video_frames) != num_video_frames or num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames!r} (empty video?)")
    _check_positive(num_frames, "num_frames")
    _check_positive(stride, "stride")


def clip_indices(start: int, num_frames: int, stride: int, num_video_frames: int) -> np.ndarray:
    """Frame indices ``start + i * stride`` for ``i < num_frames``, clamped to the last frame.

    A video shorter than the clip repeats its last frame (PySlowFast's behaviour).

    Returns:
        ``(num_frames,) int64``.
    """
    _check_sampling(num_video_frames, num_frames, stride)
    if int(start) != start or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    idx = int(start) + np.arange(num_frames, dtype=np.int64) * int(stride)
    return np.minimum(idx, num_video_frames - 1)


def random_clip_start(num_video_frames: int, num_frames: int, stride: int,
                      rng: Optional[np.random.Generator] = None) -> int:
    """Uniformly random start so the clip fits in the video (0 when the video is shorter)."""
    _check_sampling(num_video_frames, num_frames, stride)
    delta = max(num_video_frames - _clip_span(num_frames, stride), 0)
    rng = np.random.default_rng() if rng is None else rng
    return int(rng.integers(0, delta + 1))


def uniform_clip_starts(num_video_frames: int, num_frames: int, stride: int,
                        num_clips: int) -> List[int]:
    """Starts of ``num_clips`` clips spread uniformly over the video (test-time multi-view).

    The valid starts ``0..delta`` are cut into ``num_clips`` equal segments and each clip starts at a
    segment's centre (mmaction2's test sampling; one clip = the centre clip). Short videos give
    repeated starts.
    """
    _check_sampling(num_video_frames, num_frames, stride)
    _check_positive(num_clips, "num_clips")
    n_starts = max(num_video_frames - _clip_span(num_frames, stride), 0) + 1
    return [int(n_starts * (i + 0.5) / num_clips) for i in range(num_clips)]
