"""Shared fixtures: tiny synthetic videos and datasets (small and session-scoped: the CPU is shared)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder written by `make_synth_dataset`: 8 classes (4 static, 4 motion), 2 train + 1 val videos
    per class, 32x32, 16 frames, 25 fps, seed 0. Holds train.txt, val.txt, classes.txt,
    classes.json, dataset.json. Read-only: copy it before changing anything."""
    from ada3d_edge.data.synth import make_synth_dataset

    out = tmp_path_factory.mktemp("tiny_synth")
    make_synth_dataset(out, num_classes=8, videos_per_class=2, val_per_class=1, size=32, frames=16,
                       fps=25.0, seed=0, progress=False, overwrite=True)
    return out


TINY_VIDEO_FRAMES = 24


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-frame 64x48 (W x H) mp4 at 25 fps; frame i is flat grey of value 10 * i, so a decoded
    frame's mean tells its index (within ~4 grey levels after mp4v)."""
    from ada3d_edge.data.video import write_video

    frames = np.stack([np.full((48, 64, 3), 10 * i, np.uint8) for i in range(TINY_VIDEO_FRAMES)])
    path = tmp_path_factory.mktemp("tiny_video") / "grey_ramp.mp4"
    write_video(path, frames, fps=25.0)
    return path
