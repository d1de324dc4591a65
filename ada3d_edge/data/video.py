"""Video decoding with OpenCV, and rawframe folders — torch-free (shared with the runtime).

Two sources of frames, one result type ``(N, H, W, 3) uint8 RGB``:

* video files (`probe_video`, `read_video_frames`): decoded sequentially up to the largest wanted
  index; the container's frame count (``CAP_PROP_FRAME_COUNT``) is only a hint, what decodes counts.
* rawframe folders (`probe_rawframes`, `read_rawframes`): one image per frame named by a template,
  ``img_00001.jpg`` ... by default (mmaction2's layout, 1-based).

`probe` / `read_frames` pick the source by whether the path is a directory. Every failure (missing
file, undecodable data, fewer decodable frames than needed) raises `VideoReadError`, which carries the
path and the reason so a dataset can skip the video and report it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_TEMPLATE = "img_{:05d}.jpg"

__all__ = [
    "VideoReadError",
    "VideoInfo",
    "probe_video",
    "read_video_frames",
    "probe_rawframes",
    "read_rawframes",
    "probe",
    "read_frames",
    "write_video",
    "DEFAULT_TEMPLATE",
]


class VideoReadError(Exception):
    """A video (file or rawframe folder) could not be read.

    Attributes:
        path: the video's path.
        reason: what went wrong, in words.
        num_decoded: frames that did decode before the failure, when known (else None).
    """

    def __init__(self, path: PathLike, reason: str, num_decoded: Optional[int] = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.num_decoded = num_decoded
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep path/reason when sent between processes (DataLoader workers)
        return (type(self), (self.path, self.reason, self.num_decoded))


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` / `probe_rawframes` found. ``fps`` is 0.0 when unknown (rawframes)."""

    num_frames: int
    fps: float
    width: int
    height: int


def _check_indices(indices: Sequence[int], path: PathLike) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of frame numbers, got shape "
                         f"{idx.shape} for {os.fspath(path)}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.min() < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    return idx.astype(np.int64)


def _open(path: PathLike) -> "cv2.VideoCapture":
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if os.path.isdir(path):
        raise VideoReadError(path, "is a directory, not a video file (use read_rawframes)")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(path, "OpenCV cannot open it: not a video, truncated, or an "
                                   "unsupported codec")
    return cap


def _count_decodable(cap: "cv2.VideoCapture") -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def probe_video(path: PathLike, exact: bool = False) -> VideoInfo:
    """Frame count, fps and size of a video file.

    Args:
        path: the video file.
        exact: count frames by decoding them all instead of trusting the container's count (slow
            for long videos). The count is also decoded when the container gives none.

    Raises:
        VideoReadError: missing, unreadable, or no frame decodes.
    """
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if exact or count <= 0:
            count = _count_decodable(cap)
        if count <= 0 or width <= 0 or height <= 0:
            raise VideoReadError(path, "no frame decodes")
        return VideoInfo(num_frames=count, fps=fps if fps > 0 else 0.0, width=width, height=height)
    finally:
        cap.release()


def read_video_frames(path: PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) from a video file.

    Decodes sequentially from frame 0 to ``max(indices)`` and keeps the wanted frames, which is exact
    whatever the container's index says (seeking is not frame-accurate for every codec).

    Returns:
        ``(len(indices), H, W, 3) uint8 RGB``.

    Raises:
        VideoReadError: missing/unreadable file, or fewer decodable frames than ``max(indices) + 1``
            (``num_decoded`` then says how many did decode).
    """
    idx = _check_indices(indices, path)
    wanted = set(idx.tolist())
    last = int(idx.max())
    cap = _open(path)
    got = {}
    try:
        pos = 0
        while pos <= last:
            if not cap.grab():
                break
            if pos in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise VideoReadError(path, f"frame {pos} does not decode", num_decoded=pos)
                got[pos] = frame
            pos += 1
    finally:
        cap.release()
    if pos <= last:
        reason = ("no frame decodes" if pos == 0 else
                  f"only {pos} frames decode, frame {last} was needed (video too short or truncated)")
        raise VideoReadError(path, reason, num_decoded=pos)
    first = got[int(idx[0])]
    out = np.empty((len(idx),) + first.shape[:2] + (3,), dtype=np.uint8)
    for i, j in enumerate(idx.tolist()):
        frame = got[j]
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def _rawframe_names(folder: str) -> set:
    try:
        return set(os.listdir(folder))
    except OSError as e:
        raise VideoReadError(folder, f"cannot list the rawframe folder ({e.strerror})") from None


def _check_folder(folder: PathLike) -> str:
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise VideoReadError(folder, "rawframe folder not found")
    if not os.path.isdir(folder):
        raise VideoReadError(folder, "not a directory (expected a rawframe folder)")
    return folder


def probe_rawframes(folder: PathLike, template: str = DEFAULT_TEMPLATE,
                    start_index: int = 1) -> VideoInfo:
    """Count consecutive frames ``template.format(start_index + i)`` in ``folder``; size of the first."""
    folder = _check_folder(folder)
    names = _rawframe_names(folder)
    n = 0
    while template.format(start_index + n) in names:
        n += 1
    if n == 0:
        raise VideoReadError(folder, f"no frame named like {template.format(start_index)!r} "
                                     f"(template {template!r}, first index {start_index})")
    first = cv2.imread(os.path.join(folder, template.format(start_index)), cv2.IMREAD_COLOR)
    if first is None:
        raise VideoReadError(folder, f"{template.format(start_index)} does not decode as an image")
    return VideoInfo(num_frames=n, fps=0.0, width=int(first.shape[1]), height=int(first.shape[0]))


def read_rawframes(folder: PathLike, indices: Sequence[int], template: str = DEFAULT_TEMPLATE,
                   start_index: int = 1) -> np.ndarray:
    """Read frames ``indices`` (0-based) from a rawframe folder; file ``template.format(i + start_index)``.

    Returns:
        ``(len(indices), H, W, 3) uint8 RGB``.

    Raises:
        VideoReadError: missing folder, missing or undecodable image, or frames of different sizes.
    """
    folder = _check_folder(folder)
    idx = _check_indices(indices, folder)
    cache = {}
    out = None
    for i, j in enumerate(idx.tolist()):
        if j not in cache:
            name = template.format(j + start_index)
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
            if img is None:
                exists = os.path.exists(os.path.join(folder, name))
                raise VideoReadError(folder, f"frame {j} ({name}) "
                                             f"{'does not decode' if exists else 'is missing'}")
            cache[j] = img
        img = cache[j]
        if out is None:
            out = np.empty((len(idx),) + img.shape[:2] + (3,), dtype=np.uint8)
        elif img.shape[:2] != out.shape[1:3]:
            raise VideoReadError(folder, f"frame {j} is {img.shape[1]}x{img.shape[0]}, earlier frames "
                                         f"are {out.shape[2]}x{out.shape[1]}")
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def probe(path: PathLike, template: str = DEFAULT_TEMPLATE) -> VideoInfo:
    """`probe_rawframes` for a directory, else `probe_video`."""
    if os.path.isdir(path):
        return probe_rawframes(path, template)
    return probe_video(path)


def read_frames(path: PathLike, indices: Sequence[int],
                template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """`read_rawframes` for a directory, else `read_video_frames`."""
    if os.path.isdir(path):
        return read_rawframes(path, indices, template)
    return read_video_frames(path, indices)


def read_center_clip(path: PathLike, num_frames: int, stride: int,
                     template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """The eval's single test clip of a video (T frames every ``stride``, centred): ``(T, H, W, 3)`` RGB."""
    from ..preprocess import clip_indices, uniform_clip_starts

    n = probe(path, template).num_frames
    start = uniform_clip_starts(n, num_frames, stride, 1)[0]
    return read_frames(path, clip_indices(start, num_frames, stride, n), template)


def write_video(path: PathLike, frames: np.ndarray, fps: float = 25.0, fourcc: str = "mp4v") -> None:
    """Write ``(T, H, W, 3) uint8 RGB`` frames to a video file with cv2.VideoWriter.

    Raises:
        ValueError: bad frames or fps.
        OSError: OpenCV cannot open a writer for ``path`` (unwritable folder, unknown codec).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be non-empty (T, H, W, 3) uint8 RGB, got {frames.shape} "
                         f"{frames.dtype}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter cannot write {os.fspath(path)!r} with fourcc {fourcc!r}; "
                      f"check that the folder exists and the extension matches the codec")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
