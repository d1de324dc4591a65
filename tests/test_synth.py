"""Synthetic dataset: files and lists, mp4 round trip, determinism, and motion pairs that only
temporal order separates."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.data.lists import load_classes, load_list
from ada3d_edge.data.synth import (COLOURS, MOTION_COLOURS, MOTION_POOL, PALETTE, _place, _sprite,
                                   load_class_kinds, make_synth_dataset, render_video, synth_classes)
from ada3d_edge.data.synth_sets import CLASS_SETS
from ada3d_edge.data.video import probe_video, read_video_frames


def _cls(name, n=16):
    return next(c for c in synth_classes(n) if c.name == name)


def test_dataset_files_and_lists(tiny_synth_dataset):
    root = tiny_synth_dataset
    classes = load_classes(root / "classes.txt")
    kinds = load_class_kinds(root / "classes.json")
    assert list(kinds) == classes and len(classes) == 8
    assert [kinds[c] for c in classes] == ["static"] * 4 + ["motion"] * 4
    assert classes[4:] == ["move_right", "move_left", "rotate_cw", "rotate_ccw"]
    train, val = load_list(root / "train.txt", root, 8), load_list(root / "val.txt", root, 8)
    assert len(train) == 16 and len(val) == 8
    assert sorted(r.label for r in val) == list(range(8))
    info = json.loads((root / "dataset.json").read_text())
    assert info["flip_safe"] is False and info["frames"] == 16 and (root / "README.md").exists()
    for rec in train + val:                                   # every file decodes fully
        probed = probe_video(rec.path)
        assert (probed.num_frames, probed.width, probed.height) == (16, 32, 32)
        assert read_video_frames(rec.path, [15]).shape == (1, 32, 32, 3)


def test_mp4_round_trip_matches_render(tiny_synth_dataset):
    # make_synth_dataset seeds each video with [seed, split_id, class_idx, video_idx]
    frames = render_video(synth_classes(8)[6], np.random.default_rng([0, 0, 6, 1]), 32, 16)
    decoded = read_video_frames(tiny_synth_dataset / "train/rotate_cw/rotate_cw_0001.mp4", range(16))
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 8


def test_render_deterministic_with_seed():
    cls = _cls("rotate_cw")
    a = render_video(cls, np.random.default_rng(5), 32, 8)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_video(cls, np.random.default_rng(5), 32, 8))
    assert not np.array_equal(a, render_video(cls, np.random.default_rng(6), 32, 8))


def test_dataset_deterministic_with_seed(tmp_path):
    kw = dict(num_classes=4, videos_per_class=1, val_per_class=0, size=32, frames=8, progress=False)
    make_synth_dataset(tmp_path / "a", seed=3, **kw)
    make_synth_dataset(tmp_path / "b", seed=3, **kw)
    rel = "train/move_left/move_left_0000.mp4"
    np.testing.assert_array_equal(read_video_frames(tmp_path / "a" / rel, range(8)),
                                  read_video_frames(tmp_path / "b" / rel, range(8)))
    assert (tmp_path / "a/train.txt").read_text() == (tmp_path / "b/train.txt").read_text()
    with pytest.raises(FileExistsError, match="not empty"):
        make_synth_dataset(tmp_path / "a", seed=3, **kw)


@pytest.mark.parametrize("fwd, rev", [("move_right", "move_left"), ("rotate_cw", "rotate_ccw"),
                                      ("move_down", "move_up"), ("grow", "shrink")])
def test_pair_same_frames_up_to_order(fwd, rev):
    """Same draw: the reversed class shows exactly the same frames in reverse order."""
    a = render_video(_cls(fwd), np.random.default_rng(11), 32, 12)
    b = render_video(_cls(rev), np.random.default_rng(11), 32, 12)
    np.testing.assert_array_equal(a[::-1], b)
    assert not np.array_equal(a, b)


def test_left_right_indistinguishable_per_frame():
    """Independent draws: per-frame and time-pooled statistics of left and right agree as closely as
    two independent samples of one class do; the temporal trend of the object has opposite signs."""
    def pooled(name, seeds):
        vids = [render_video(_cls(name), np.random.default_rng(s), 32, 12, return_track=True)
                for s in seeds]
        frames = np.stack([v for v, _ in vids]).astype(np.float32)
        trend = np.mean([t[-1, 0] - t[0, 0] for _, t in vids])
        return frames.mean(axis=(0, 1)), frames.mean(axis=1).std(axis=0), trend

    right_a, spread_a, trend_right = pooled("move_right", range(0, 40))
    right_b, spread_b, _ = pooled("move_right", range(40, 80))
    left, spread_l, trend_left = pooled("move_left", range(80, 120))
    for stat_a, stat_b, stat_left in ((right_a, right_b, left), (spread_a, spread_b, spread_l)):
        same_class = np.abs(stat_a - stat_b).mean()
        assert np.abs(stat_a - stat_left).mean() < 1.5 * same_class + 0.5
    assert trend_right > 5 and trend_left < -5


def test_one_frame_tells_static_from_motion_by_colour():
    """The motion pool's colours are its own: the object's colour in any single frame says static
    or motion (the selection network's cue), while both classes of a pair draw from the same pool."""
    assert not set(COLOURS) & set(MOTION_COLOURS)
    assert {c for c, _, _ in MOTION_POOL} == set(MOTION_COLOURS)
    assert all(c.appearance[0] in COLOURS for c in synth_classes(16) if c.kind == "static")

    def object_colour(name, seed):
        frames, track = render_video(_cls(name), np.random.default_rng(seed), 64, 6, return_track=True)
        i = int(np.argmin(np.abs(track[:, :2] - 32).max(1)))   # the frame with the object most inside
        x, y = np.round(track[i, :2]).astype(int)
        return frames[i, y - 4:y + 5, x - 4:x + 5].reshape(-1, 3).astype(np.float32)

    palette = {name: np.array(rgb, np.float32) for name, rgb in PALETTE.items()}
    for name in ("red_circle_striped", "move_right", "rotate_ccw", "grow"):
        for seed in range(3):
            pixels = object_colour(name, seed)
            # the object's pixel nearest to any palette colour (stripes and dots darken the others)
            dist = {c: np.abs(pixels - rgb).sum(1).min() for c, rgb in palette.items()}
            nearest = min(dist, key=dist.get)
            assert (nearest in MOTION_COLOURS) == (_cls(name).kind == "motion"), (name, seed, nearest)


def test_track_directions():
    for name, col, sign in [("move_right", 0, 1), ("move_left", 0, -1), ("move_down", 1, 1),
                            ("move_up", 1, -1), ("rotate_cw", 2, 1), ("rotate_ccw", 2, -1),
                            ("grow", 3, 1), ("shrink", 3, -1)]:
        _, track = render_video(_cls(name), np.random.default_rng(0), 32, 10, return_track=True)
        assert np.sign(track[-1, col] - track[0, col]) == sign, name
    _, track = render_video(_cls("red_circle_striped"), np.random.default_rng(0), 32, 10,
                            return_track=True)
    assert np.ptp(track[:, :2], axis=0).max() <= 2.0 and np.ptp(track[:, 2:], axis=0).max() == 0


def test_rotation_sense_on_screen():
    """angle_cw=90 maps an offset (x, y) to (-y, x) in image coordinates (y down): clockwise."""
    sprite, mask = _sprite(("red", "ell", "solid"), 20)
    yy, xx = np.mgrid[0:64, 0:64]
    offsets = []
    for angle in (0, 90):
        _, alpha = _place(sprite, mask, 64, 32, 32, angle, 1.0)
        offsets.append(((xx * alpha).sum() / alpha.sum() - 32, (yy * alpha).sum() / alpha.sum() - 32))
    (x0, y0), (x90, y90) = offsets
    assert np.hypot(x0, y0) > 1                     # the L's centroid is off its centre
    assert abs(x90 - (-y0)) < 0.3 and abs(y90 - x0) < 0.3


def test_bad_class_count():
    with pytest.raises(ValueError, match="4, 8, 12 or 16"):
        synth_classes(6)


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out = tmp_path / "syn"
    res = runner.invoke(main, ["synth", str(out), "--classes", "4", "--videos-per-class", "1",
                               "--val-per-class", "0", "--size", "32", "--frames", "8", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (out / "train.txt").read_text().count("\n") == 4 and (out / "classes.json").exists()
    res = runner.invoke(main, ["synth", str(tmp_path / "x"), "--classes", "6"])
    assert res.exit_code == 2 and "4, 8, 12 or 16" in res.output


def test_motion_is_strong_enough_for_stride_4_clips():
    """At 64 px and 40 frames, an 8-frame clip at stride 4 sees the object travel several cells of a
    stride-8 feature map: translations cross most of the frame, rotations (about a pivot off the
    object's centre) turn 45-70 degrees and move the centre between sampled frames."""
    for seed in range(10):
        _, track = render_video(_cls("move_right"), np.random.default_rng(seed), 64, 40, return_track=True)
        assert track[-1, 0] - track[0, 0] > 0.6 * 64
        _, track = render_video(_cls("rotate_cw"), np.random.default_rng(seed), 64, 40, return_track=True)
        step = np.diff(track[::4], axis=0)
        assert np.all((step[:, 2] > 40) & (step[:, 2] < 75))
        assert np.hypot(step[:, 0], step[:, 1]).min() > 4


# --- class set b: a second dataset with other classes (policy transfer, the paper's Table 3) -------

def _cls_b(name):
    return next(c for c in synth_classes(16, "b") if c.name == name)


@pytest.mark.parametrize("n", [4, 8, 12, 16])
def test_class_set_b_has_other_classes_half_static_half_motion(n):
    a_all, b = synth_classes(16, "a"), synth_classes(n, "b")
    assert not {c.name for c in b} & {c.name for c in a_all}
    assert [c.kind for c in b] == ["static"] * (n // 2) + ["motion"] * (n // 2)
    assert all(c.class_set == "b" for c in b)
    # appearances differ from every one set a draws: colours and shapes alike
    sa, sb = CLASS_SETS["a"], CLASS_SETS["b"]
    colours_a = set(sa.static_colours) | set(sa.motion_colours)
    shapes_a = {s for _, s, _ in sa.static_appearances} | set(sa.motion_shapes)
    drawn_b = [c.appearance for c in b if c.kind == "static"] + list(sb.motion_pool)
    assert not {c for c, _, _ in drawn_b} & colours_a and not {s for _, s, _ in drawn_b} & shapes_a
    # and one frame still tells static from motion within set b (colours of their own)
    assert not {c.appearance[0] for c in b if c.kind == "static"} & set(sb.motion_colours)


def test_class_set_b_every_shape_and_texture_draws():
    sb = CLASS_SETS["b"]
    for app in [*sb.static_appearances, *sb.motion_pool]:
        rgb, mask = _sprite(app, 20)
        assert 0.15 < mask.mean() < 0.8 and rgb.shape[:2] == mask.shape, app


@pytest.mark.parametrize("fwd, rev", [p[:2] for p in CLASS_SETS["b"].motion_pairs])
def test_class_set_b_pairs_same_frames_up_to_order(fwd, rev):
    a = render_video(_cls_b(fwd), np.random.default_rng(11), 32, 12)
    b = render_video(_cls_b(rev), np.random.default_rng(11), 32, 12)
    np.testing.assert_array_equal(a[::-1], b)
    assert not np.array_equal(a, b)


def test_class_set_b_track_directions():
    def track(name):
        return render_video(_cls_b(name), np.random.default_rng(0), 64, 40, return_track=True)[1]
    for name, dx, dy in [("move_down_right", 1, 1), ("move_up_left", -1, -1), ("move_down_left", -1, 1),
                         ("move_up_right", 1, -1)]:
        t = track(name)
        assert (np.sign(t[-1, 0] - t[0, 0]), np.sign(t[-1, 1] - t[0, 1])) == (dx, dy), name
    for name, sign in [("orbit_cw", 1), ("orbit_ccw", -1)]:
        t = track(name)
        rel = t[:, :2] - t[:, :2].mean(0)
        cross = rel[:-1, 0] * rel[1:, 1] - rel[:-1, 1] * rel[1:, 0]   # > 0: clockwise with y down
        assert np.sign(np.median(cross)) == sign and np.ptp(t[:, 2]) == 0, name  # the object does not turn
    t = track("spin_grow")
    assert np.all(np.diff(t[:, 2]) > 0) and t[-1, 3] > t[0, 3]
    t = track("spin_shrink")
    assert np.all(np.diff(t[:, 2]) < 0) and t[-1, 3] < t[0, 3]


def test_class_set_b_dataset_deterministic_and_recorded(tmp_path):
    kw = dict(num_classes=4, videos_per_class=1, val_per_class=1, size=32, frames=8, progress=False,
              class_set="b")
    make_synth_dataset(tmp_path / "a", seed=3, **kw)
    make_synth_dataset(tmp_path / "b", seed=3, **kw)
    make_synth_dataset(tmp_path / "c", seed=4, **kw)
    classes = load_classes(tmp_path / "a/classes.txt")
    kinds = load_class_kinds(tmp_path / "a/classes.json")
    assert classes == [c.name for c in synth_classes(4, "b")]
    assert sorted(set(kinds.values())) == ["motion", "static"]
    assert json.loads((tmp_path / "a/dataset.json").read_text())["class_set"] == "b"
    assert "class set `b`" in (tmp_path / "a/README.md").read_text()
    rel = "train/orbit_ccw/orbit_ccw_0000.mp4"
    first = read_video_frames(tmp_path / "a" / rel, range(8))
    np.testing.assert_array_equal(first, read_video_frames(tmp_path / "b" / rel, range(8)))
    assert not np.array_equal(first, read_video_frames(tmp_path / "c" / rel, range(8)))
    for split in ("train.txt", "val.txt"):
        assert (tmp_path / "a" / split).read_text() == (tmp_path / "b" / split).read_text()


def test_cli_synth_class_set(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["synth", str(tmp_path / "b"), "--class-set", "b", "--classes", "4",
                               "--videos-per-class", "1", "--val-per-class", "0", "--size", "32",
                               "--frames", "8", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "set b" in res.output
    assert load_classes(tmp_path / "b/classes.txt") == [c.name for c in synth_classes(4, "b")]
    res = runner.invoke(main, ["synth", str(tmp_path / "z"), "--class-set", "z"])
    assert res.exit_code == 2 and "--class-set" in res.output and "'a', 'b'" in res.output
    with pytest.raises(ValueError, match="class set 'z' unknown; valid: a, b"):
        synth_classes(4, "z")
