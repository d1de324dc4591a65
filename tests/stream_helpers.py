"""Shared helpers for the stream runtime tests: tiny clips, free ports, loopback servers, a stand-in predictor.

Servers are started with ``subprocess.Popen`` and stopped by their own PID only (``stop_process``).
Run as a script (``python tests/stream_helpers.py SRC [SRC ...]``) it runs ``run_streams`` with the
stand-in predictor, which the SIGINT test uses as its subprocess.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ada3d_edge.testing.loopback import (FFMPEG, RTSP_RELAY, free_port, start_http_server,  # noqa: F401
                                       start_rtsp_push, start_rtsp_relay, stop_process, wait_port)


def make_clip(path: Path, num_frames: int = 60, size: int = 64, fps: float = 25.0) -> Path:
    """Write a tiny mp4 (mpeg4) with a moving square; frame ``i`` has mean brightness rising with ``i``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    for i in range(num_frames):
        frame = np.full((size, size, 3), (i * 3) % 256, np.uint8)
        x = (i * 4) % (size - 16)
        frame[16:32, x:x + 16] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path


@dataclass
class FakePrediction:
    """Same fields as the runtime's Prediction, filled with fixed values."""

    scores: np.ndarray
    frame_mask: np.ndarray
    stage_mask: str
    num_frames_kept: int
    gflops: float
    timings_ms: dict = field(default_factory=dict)
    classes: tuple = ("static", "motion")

    def topk(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores)[:k]
        return [(self.classes[i], float(self.scores[i])) for i in order]


class StandInPredictor:
    """Predictor stand-in: same methods as AdaptivePredictor, optional sleep per batch, records calls."""

    def __init__(self, num_frames: int = 4, stride: int = 2, delay_s: float = 0.0) -> None:
        self.num_frames, self.stride, self.delay_s = num_frames, stride, delay_s
        self.batches: list[int] = []
        self.times: list[float] = []  # time.monotonic() of every clip predicted

    def predict(self, frames: np.ndarray) -> FakePrediction:
        return self.predict_batch([frames])[0]

    def predict_batch(self, clips: list[np.ndarray]) -> list[FakePrediction]:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(len(clips))
        self.times.extend([time.monotonic()] * len(clips))
        out = []
        for clip in clips:
            if clip.ndim != 4 or clip.shape[0] != self.num_frames or clip.dtype != np.uint8:
                raise ValueError(f"bad clip {clip.shape} {clip.dtype}")
            bright = float(clip.mean()) / 255.0
            kept = 1 + int(clip.shape[0] * bright) % clip.shape[0]
            mask = np.zeros(clip.shape[0], bool)
            mask[:kept] = True
            out.append(FakePrediction(scores=np.array([1 - bright, bright], np.float32),
                                      frame_mask=mask, stage_mask="10" if kept % 2 else "11",
                                      num_frames_kept=kept, gflops=0.1 * kept,
                                      timings_ms={"total": 1000 * self.delay_s}))
        return out


def main(argv: list[str]) -> None:
    """Run the stream app with the stand-in predictor on the given sources (used by the SIGINT test)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ada3d_edge.runtime.app import RunOptions, run_streams
    from ada3d_edge.runtime.sources import SourceOptions

    options = RunOptions(jsonl="-", topk=2, hop=2, source=SourceOptions(reconnect_backoff=(0.05, 0.2),
                                                                        open_attempts=None))
    run_streams(None, argv, options, predictor=StandInPredictor(delay_s=0.05))


if __name__ == "__main__":
    main(sys.argv[1:])
