"""Preprocessing: shapes, normalisation, centre/random crops, temporal sampling, no torch import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ada3d_edge.preprocess import (KINETICS_MEAN, KINETICS_STD, center_crop_frames, clip_indices,
                                   preprocess_eval, random_clip_start, random_resized_crop_frames,
                                   to_clip_tensor, to_policy_frames, to_policy_tensor, uniform_clip_starts)


def _gradient_frames(t=3, h=48, w=64):
    """Frames whose red channel is the column index (so crops and flips are visible)."""
    f = np.zeros((t, h, w, 3), np.uint8)
    f[..., 0] = np.arange(w, dtype=np.uint8)[None, None, :]
    f[..., 1] = np.arange(h, dtype=np.uint8)[None, :, None]
    return f


def test_center_crop_shapes_and_centre():
    frames = _gradient_frames()
    out = center_crop_frames(frames, 32, short_side=48)      # no resize: plain centre crop
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0, 0, 0] == (64 - 32) // 2 and out[0, 0, 0, 1] == (48 - 32) // 2
    small = center_crop_frames(frames, 24)                    # short side resized to 24
    assert small.shape == (3, 24, 24, 3)
    tall = center_crop_frames(frames.transpose(0, 2, 1, 3).copy(), 20, short_side=30)
    assert tall.shape == (3, 20, 20, 3)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 3), np.float32),
                                 np.zeros((0, 8, 8, 3), np.uint8)])
def test_bad_frames_raise(bad):
    with pytest.raises(ValueError, match="frames"):
        center_crop_frames(bad, 4)


def test_short_side_smaller_than_crop_raises():
    with pytest.raises(ValueError, match="short_side=16"):
        center_crop_frames(_gradient_frames(), 32, short_side=16)


def test_to_clip_tensor_normalises_channels_first():
    crops = np.zeros((2, 4, 5, 3), np.uint8)
    crops[1, :, :, 2] = 255
    x = to_clip_tensor(crops, KINETICS_MEAN, KINETICS_STD)
    assert x.shape == (3, 2, 4, 5) and x.dtype == np.float32
    assert np.allclose(x[2, 1], (1.0 - 0.45) / 0.225)
    assert np.allclose(x[0, 0], -0.45 / 0.225)
    with pytest.raises(ValueError, match="mean and std"):
        to_clip_tensor(crops, (0.5, 0.5), (0.2, 0.2, 0.2))


def test_lookup_normalisation_is_bit_identical_to_the_formula():
    """The table lookup gives exactly the float32 arithmetic it replaced, for every uint8 value,
    per-channel mean/std and strided inputs (a crop view, a frame subset)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)
    frames[0, 0, :, :] = np.arange(24 * 3).reshape(24, 3) % 256
    frames[1].reshape(-1)[:256] = np.arange(256)  # every value in every channel position
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for crops in (frames, frames[::2, 2:18, 4:20], frames[[0, 3, 4]]):
        ref = crops.astype(np.float32) * np.float32(1.0 / 255.0)
        ref = np.ascontiguousarray(((ref - np.float32(mean)) / np.float32(std)).transpose(3, 0, 1, 2))
        got = to_clip_tensor(crops, mean, std)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match="std values must be > 0"):
        to_clip_tensor(frames, mean, (0.2, 0.0, 0.2))


def test_policy_frames_are_the_policy_tensor_frame_major():
    frames = _gradient_frames(t=3)
    crops = center_crop_frames(frames, 32)
    x = to_policy_frames(crops, 16, KINETICS_MEAN, KINETICS_STD)
    assert x.shape == (3, 3, 16, 16) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, to_policy_tensor(crops, 16).transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(to_policy_frames(crops[1:2], 32), to_clip_tensor(crops[1:2]).transpose(1, 0, 2, 3))


@pytest.mark.parametrize("size,p", [(64, 32), (64, 16), (48, 24), (64, 24), (30, 32)])
def test_policy_resize_in_one_call_gives_the_per_frame_pixels(size, p):
    """Divisible sizes resize the T frames as one stacked image: the same pixels as frame by frame
    (cv2.INTER_AREA); other sizes (64 -> 24, upscaling) take the per-frame path."""
    import cv2

    crops = np.random.default_rng(size + p).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    ref = np.stack([cv2.resize(c, (p, p), interpolation=cv2.INTER_AREA) for c in crops])
    want = np.stack([to_clip_tensor(r[None])[:, 0] for r in ref])
    np.testing.assert_array_equal(to_policy_frames(crops, p), want)
    np.testing.assert_array_equal(to_policy_frames(crops[::2], p), want[::2])  # a strided view of the frames


def test_policy_tensor_and_preprocess_eval_agree():
    frames = _gradient_frames(t=2)
    clip, policy = preprocess_eval(frames, 32, 16, KINETICS_MEAN, KINETICS_STD)
    assert clip.shape == (3, 2, 32, 32) and policy.shape == (3, 2, 16, 16)
    crops = center_crop_frames(frames, 32)
    np.testing.assert_array_equal(clip, to_clip_tensor(crops))
    np.testing.assert_array_equal(policy, to_policy_tensor(crops, 16))


def test_random_resized_crop_deterministic_same_for_all_frames():
    frames = np.repeat(_gradient_frames(t=1), 4, axis=0)
    a = random_resized_crop_frames(frames, 32, (48, 60), rng=np.random.default_rng(3))
    b = random_resized_crop_frames(frames, 32, (48, 60), rng=np.random.default_rng(3))
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert all(np.array_equal(a[0], a[i]) for i in range(4))   # one crop for the whole clip


def test_random_resized_crop_flip():
    frames = _gradient_frames(t=1)

    def increasing(flip, seed):
        out = random_resized_crop_frames(frames, 32, (48, 56), flip=flip,
                                         rng=np.random.default_rng(seed))
        return int(out[0, 0, -1, 0]) > int(out[0, 0, 0, 0])

    assert {increasing(True, s) for s in range(20)} == {True, False}
    assert {increasing(False, s) for s in range(20)} == {True}


def test_random_resized_crop_bad_range():
    with pytest.raises(ValueError, match="short_side_range"):
        random_resized_crop_frames(_gradient_frames(), 32, (16, 40), rng=np.random.default_rng(0))


def test_clip_indices_clamps_short_videos():
    np.testing.assert_array_equal(clip_indices(2, 4, 3, 100), [2, 5, 8, 11])
    np.testing.assert_array_equal(clip_indices(2, 4, 3, 7), [2, 5, 6, 6])
    with pytest.raises(ValueError, match="num_video_frames"):
        clip_indices(0, 4, 3, 0)


def test_uniform_clip_starts():
    starts = uniform_clip_starts(100, 8, 8, 10)          # span 57 -> valid starts 0..43
    assert len(starts) == 10 and starts == sorted(starts)
    assert 0 <= starts[0] and starts[-1] <= 43 and len(set(starts)) == 10
    assert uniform_clip_starts(100, 8, 8, 1) == [22]     # one clip: the centre clip
    assert uniform_clip_starts(20, 8, 8, 3) == [0, 0, 0]  # shorter than a clip


def test_random_clip_start_in_range_and_seeded():
    starts = [random_clip_start(50, 4, 4, np.random.default_rng(s)) for s in range(30)]
    assert min(starts) >= 0 and max(starts) <= 50 - 13
    assert random_clip_start(50, 4, 4, np.random.default_rng(7)) == \
        random_clip_start(50, 4, 4, np.random.default_rng(7))
    assert random_clip_start(5, 4, 4, np.random.default_rng(0)) == 0


def test_torch_free_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import ada3d_edge.preprocess, ada3d_edge.data.video, ada3d_edge.data.lists\n"
            "import ada3d_edge.data.synth\n"
            "print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
