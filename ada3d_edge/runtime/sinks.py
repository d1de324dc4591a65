"""Sinks receive each (window, prediction, latency) from the scheduler: JSON lines, overlay video, window.

Every sink has ``write(window, prediction, latency_ms)`` and ``close()``; ``stop_requested`` lets a
sink (the display, on ``q``) end the run.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np

from .sources import Window


class Sink(Protocol):
    stop_requested: bool

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None: ...

    def close(self) -> None: ...


def result_record(window: Window, prediction: Any, latency_ms: float, topk: int) -> dict:
    """The JSON-lines record for one window."""
    return {
        "source": window.source,
        "timestamp": round(window.timestamp, 6),
        "frame_index": window.frame_index,
        "topk": [{"label": label, "score": round(float(score), 6)}
                 for label, score in prediction.topk(topk)],
        "stage_mask": prediction.stage_mask,
        "frames_kept": int(prediction.num_frames_kept),
        "latency_ms": round(latency_ms, 3),
    }


def describe(prediction: Any) -> str:
    """Short text for overlays and the console: ``label 0.93 | 3D 10 | 5/8 fr``."""
    label, score = prediction.topk(1)[0]
    total = len(prediction.frame_mask)
    return (f"{label} {score:.2f} | 3D {prediction.stage_mask} | "
            f"{prediction.num_frames_kept}/{total} fr")


class JsonlSink:
    """One JSON object a line, to stdout (``path`` ``-``) or a file."""

    stop_requested = False

    def __init__(self, path: str | os.PathLike, topk: int = 5) -> None:
        self.topk, self.path = topk, path
        self._own = str(path) != "-"
        self._fh: IO[str] = open(path, "w", encoding="utf-8") if self._own else sys.stdout

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None:
        self._fh.write(json.dumps(result_record(window, prediction, latency_ms, self.topk)) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._own:
            self._fh.close()


class ConsoleSink:
    """One human-readable line per window (the default when no other sink is chosen)."""

    stop_requested = False

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None:
        print(f"[{window.source} #{window.frame_index}] {describe(prediction)} | "
              f"{latency_ms:.1f} ms", file=self._stream, flush=True)

    def close(self) -> None:
        pass


MIN_OVERLAY_HEIGHT = 360  # smaller frames are upscaled (by a whole factor) so the text stays legible


def overlay_scale(height: int, min_height: int = MIN_OVERLAY_HEIGHT) -> int:
    """Whole upscaling factor that brings ``height`` to at least ``min_height`` (1 when it is)."""
    return max(1, -(-min_height // max(int(height), 1)))


def draw_overlay(frame: np.ndarray, prediction: Any | None, rgb: bool = True,
                 min_height: int = MIN_OVERLAY_HEIGHT) -> np.ndarray:
    """A BGR copy of ``frame``, upscaled to at least ``min_height`` rows, with the label, score
    and configuration of ``prediction`` (None: nothing yet) in the top-left corner.

    Text size follows the output's height, so it reads the same at 64 px and at 1080p.
    """
    img = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if rgb else frame.copy()
    k = overlay_scale(img.shape[0], min_height)
    if k > 1:
        img = cv2.resize(img, (img.shape[1] * k, img.shape[0] * k), interpolation=cv2.INTER_NEAREST)
    if prediction is None:
        return img
    label, score = prediction.topk(1)[0]
    lines = [f"{label} {score:.2f}",
             f"3D {prediction.stage_mask}  {prediction.num_frames_kept}/{len(prediction.frame_mask)} fr"]
    font_scale = img.shape[0] / 600  # 0.6 at 360 rows: ~13 px letters
    thick = max(1, round(font_scale * 1.5))
    line_h = int(30 * font_scale)
    for i, text in enumerate(lines):
        org = (int(8 * font_scale), (i + 1) * line_h)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")


def check_overlay_path(path: str | os.PathLike) -> Path:
    """Refuse an ``--overlay`` path OpenCV cannot write a video to, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--overlay {str(path)!r}: needs a video file name ending in "
                         f"{', '.join(VIDEO_SUFFIXES)}, e.g. --overlay {path.with_suffix('.mp4')}")
    if path.is_dir():
        raise ValueError(f"--overlay {str(path)!r} is a directory; give a file name such as {path / 'out.mp4'}")
    return path


def overlay_path(path: str | os.PathLike, source_index: int, num_sources: int) -> Path:
    """``out.mp4`` for one source; ``out_0.mp4``, ``out_1.mp4``... for several."""
    path = Path(path)
    if num_sources <= 1:
        return path
    return path.with_name(f"{path.stem}_{source_index}{path.suffix or '.mp4'}")


class OverlayVideoSink:
    """Every frame of each source, at the source's rate, with its latest prediction drawn on it.

    The readers hand over each raw frame (``write_frame``, on their threads); ``write`` (the
    scheduler) only updates the prediction drawn from then on. One video per source.
    """

    stop_requested = False

    def __init__(self, path: str | os.PathLike, num_sources: int, default_fps: float = 25.0) -> None:
        self.path, self.num_sources, self.default_fps = path, num_sources, default_fps
        self._writers: dict[int, cv2.VideoWriter] = {}
        self._latest: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.paths: dict[int, Path] = {}
        self.frames_written: dict[int, int] = {}

    def _writer(self, source_index: int, shape: tuple[int, ...], fps: float) -> cv2.VideoWriter:
        if source_index not in self._writers:
            out = overlay_path(self.path, source_index, self.num_sources)
            out.parent.mkdir(parents=True, exist_ok=True)
            h, w = shape[:2]
            k = overlay_scale(h)
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps or self.default_fps,
                                     (w * k, h * k))
            if not writer.isOpened():
                raise OSError(f"cannot write overlay video {out} (check the directory and extension)")
            with self._lock:
                self._writers[source_index], self.paths[source_index] = writer, out
                self.frames_written[source_index] = 0
        return self._writers[source_index]

    def write_frame(self, source_index: int, frame_bgr: np.ndarray, fps: float) -> None:
        """One raw source frame (BGR, as decoded), drawn with the source's latest prediction."""
        writer = self._writer(source_index, frame_bgr.shape, fps)
        with self._lock:
            prediction = self._latest.get(source_index)
        writer.write(draw_overlay(frame_bgr, prediction, rgb=False))
        self.frames_written[source_index] += 1

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None:
        with self._lock:
            self._latest[window.source_index] = prediction

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                writer.release()
            self._writers.clear()


class DisplaySink:
    """Shows the newest frame of each window with cv2.imshow, one window per source; ``q`` stops."""

    stop_requested = False

    def __init__(self) -> None:
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
                and not os.environ.get("WAYLAND_DISPLAY"):
            raise RuntimeError("--show needs a display but DISPLAY is not set (headless machine or "
                               "SSH without -X); use --overlay OUT.mp4 or --jsonl instead")
        self._opened: set[str] = set()
        self.disabled = False

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None:
        if self.disabled:
            return
        try:
            cv2.imshow(window.source, draw_overlay(window.frames[-1], prediction))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            self.disabled = True
            print("--show: this OpenCV has no GUI support (opencv-python-headless); install "
                  "opencv-python or use --overlay OUT.mp4. Continuing without a display.",
                  file=sys.stderr)
            return
        self._opened.add(window.source)
        if key in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        if self._opened:
            cv2.destroyAllWindows()
