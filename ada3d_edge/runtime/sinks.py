"""Sinks receive each (window, prediction, latency) from the scheduler: JSON lines, overlay video, window.

Every sink has ``write(window, prediction, latency_ms)`` and ``close()``; ``stop_requested`` lets a
sink (the display, on ``q``) end the run.
"""
from __future__ import annotations

import json
import os
import sys
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
        self.topk = topk
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


def draw_overlay(frame_rgb: np.ndarray, prediction: Any) -> np.ndarray:
    """A BGR copy of ``frame_rgb`` with label, score and configuration written in the top-left corner."""
    img = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.3, img.shape[1] / 640)
    label, score = prediction.topk(1)[0]
    lines = [f"{label} {score:.2f}",
             f"3D {prediction.stage_mask}  {prediction.num_frames_kept}/{len(prediction.frame_mask)} fr"]
    for i, text in enumerate(lines):
        org = (4, int((i + 1) * 22 * scale))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
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
    """Writes the sampled frames new in each window, annotated, to one mp4 per source."""

    stop_requested = False

    def __init__(self, path: str | os.PathLike, num_sources: int, default_fps: float = 10.0) -> None:
        self.path, self.num_sources, self.default_fps = path, num_sources, default_fps
        self._writers: dict[int, cv2.VideoWriter] = {}
        self.paths: dict[int, Path] = {}

    def _writer(self, window: Window) -> cv2.VideoWriter:
        if window.source_index not in self._writers:
            out = overlay_path(self.path, window.source_index, self.num_sources)
            out.parent.mkdir(parents=True, exist_ok=True)
            h, w = window.frames.shape[1:3]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"),
                                     window.fps or self.default_fps, (w, h))
            if not writer.isOpened():
                raise OSError(f"cannot write overlay video {out} (check the directory and extension)")
            self._writers[window.source_index], self.paths[window.source_index] = writer, out
        return self._writers[window.source_index]

    def write(self, window: Window, prediction: Any, latency_ms: float) -> None:
        writer = self._writer(window)
        for frame in window.frames[-window.new_frames:]:
            writer.write(draw_overlay(frame, prediction))

    def close(self) -> None:
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
