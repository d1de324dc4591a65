"""Video reader: round trips, frame order, RGB, rawframe folders, and every failure as VideoReadError."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from ada3d_edge.data.video import (VideoReadError, probe, probe_rawframes, probe_video, read_frames,
                                   read_rawframes, read_video_frames, write_video)

TINY_VIDEO_FRAMES = 24  # see the tiny_video fixture in conftest.py


def test_probe_tiny_video(tiny_video):
    info = probe_video(tiny_video)
    assert (info.num_frames, info.width, info.height) == (TINY_VIDEO_FRAMES, 64, 48)
    assert info.fps == pytest.approx(25.0)
    assert probe_video(tiny_video, exact=True).num_frames == TINY_VIDEO_FRAMES
    assert probe(tiny_video) == info


def test_read_frames_any_order_with_repeats(tiny_video):
    frames = read_video_frames(tiny_video, [0, 5, 3, 5, 23])
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.reshape(5, -1).mean(1), [0, 50, 30, 50, 230], atol=5)
    np.testing.assert_array_equal(frames[1], frames[3])
    np.testing.assert_array_equal(read_frames(tiny_video, [3])[0], frames[2])


def test_colour_order_is_rgb(tmp_path):
    red = np.zeros((6, 32, 32, 3), np.uint8)
    red[..., 0] = 220
    path = tmp_path / "red.mp4"
    write_video(path, red, fps=10)
    f = read_video_frames(path, [2])[0].astype(int)
    assert f[..., 0].mean() > 150 and f[..., 2].mean() < 60


def test_too_short_video(tiny_video):
    with pytest.raises(VideoReadError, match="only 24 frames decode") as info:
        read_video_frames(tiny_video, [0, 30])
    assert info.value.num_decoded == TINY_VIDEO_FRAMES
    assert info.value.path == str(tiny_video)


def test_missing_corrupt_and_empty_files(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        read_video_frames(tmp_path / "nope.mp4", [0])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoReadError, match="cannot open") as info:
        probe_video(corrupt)
    assert info.value.reason and str(corrupt) in str(info.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_video_frames(empty, [0])


def test_error_survives_pickling():
    e = pickle.loads(pickle.dumps(VideoReadError("/a/b.mp4", "broken", 3)))
    assert (e.path, e.reason, e.num_decoded) == ("/a/b.mp4", "broken", 3)


def test_bad_indices_are_value_errors(tiny_video):
    with pytest.raises(ValueError, match=">= 0"):
        read_video_frames(tiny_video, [-1])
    with pytest.raises(ValueError, match="non-empty"):
        read_video_frames(tiny_video, [])


def _write_rawframes(folder, n, template="img_{:05d}.jpg", start=1):
    folder.mkdir()
    for i in range(n):
        img = np.full((20, 30, 3), 40 * i, np.uint8)
        img[..., 2] = 200                                   # BGR on disk: red in RGB
        cv2.imwrite(str(folder / template.format(i + start)), img)
    return folder


def test_rawframes(tmp_path):
    folder = _write_rawframes(tmp_path / "vid", 5)
    info = probe_rawframes(folder)
    assert (info.num_frames, info.width, info.height) == (5, 30, 20)
    frames = read_rawframes(folder, [4, 0, 2])
    assert frames.shape == (3, 20, 30, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames[..., 1].reshape(3, -1).mean(1), [160, 0, 80], atol=3)
    assert frames[..., 0].mean() > 190                      # RGB order
    np.testing.assert_array_equal(read_frames(folder, [4, 0, 2]), frames)
    assert probe(folder).num_frames == 5
    with pytest.raises(VideoReadError, match="missing"):
        read_rawframes(folder, [5])


def test_rawframes_custom_template_and_errors(tmp_path):
    folder = _write_rawframes(tmp_path / "v2", 3, template="frame_{:04d}.png", start=0)
    assert probe_rawframes(folder, "frame_{:04d}.png", start_index=0).num_frames == 3
    assert read_rawframes(folder, [2], "frame_{:04d}.png", start_index=0).shape == (1, 20, 30, 3)
    with pytest.raises(VideoReadError, match="no frame named like"):
        probe_rawframes(folder)
    with pytest.raises(VideoReadError, match="not found"):
        read_rawframes(tmp_path / "absent", [0])


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(OSError, match="cannot write"):
        write_video(tmp_path / "no" / "dir" / "x.mp4", np.zeros((2, 8, 8, 3), np.uint8))
