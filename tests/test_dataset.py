"""VideoListDataset: train/test items, multi-label, rawframes, and unreadable videos skipped + counted."""
from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ada3d_edge.data import dataset as dataset_mod
from ada3d_edge.data.dataset import (BadVideoTracker, VideoListDataset, check_bad_fraction,
                                     collate_skip_bad)
from ada3d_edge.data.video import VideoInfo, read_video_frames, write_video
from ada3d_edge.preprocess import preprocess_eval

SMALL = dict(num_frames=4, stride=2, crop_size=24, short_side_range=(32, 40), test_crop_size=32,
             num_clips=3, policy_size=16, flip=False)


def _ds(root, split="train", list_name="train.txt", **kw):
    args = dict(SMALL, **kw)
    return VideoListDataset(root / list_name, root, root / "classes.txt", split=split, **args)


def test_train_item(tiny_synth_dataset):
    ds = _ds(tiny_synth_dataset)
    assert len(ds) == 16 and ds.num_classes == 8 and not ds.multi_label
    item = ds[3]
    assert item["clip"].shape == (3, 4, 24, 24) and item["clip"].dtype == torch.float32
    assert item["policy"].shape == (3, 4, 16, 16) and item["policy"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].shape == ()
    assert int(item["label"]) == ds.records[3].label and item["index"] == 3


def test_train_items_deterministic_with_seed(tiny_synth_dataset):
    a, b, c = _ds(tiny_synth_dataset), _ds(tiny_synth_dataset), _ds(tiny_synth_dataset, seed=1)
    clips_a = [a[i]["clip"] for i in range(4)]
    assert all(torch.equal(x, b[i]["clip"]) for i, x in enumerate(clips_a))
    assert not all(torch.equal(x, c[i]["clip"]) for i, x in enumerate(clips_a))


def test_test_item_uses_preprocess_eval(tiny_synth_dataset):
    ds = _ds(tiny_synth_dataset, split="test", list_name="val.txt")
    item = ds[0]
    assert item["clip"].shape == (3, 3, 4, 32, 32) and item["policy"].shape == (3, 3, 4, 16, 16)
    # 16 frames, span 7 -> starts 0..9 cut in 3: centres 1, 5, 8
    frames = read_video_frames(ds.records[0].path, [5, 7, 9, 11])
    clip, policy = preprocess_eval(frames, 32, 16)
    np.testing.assert_array_equal(item["clip"][1].numpy(), clip)
    np.testing.assert_array_equal(item["policy"][1].numpy(), policy)


def test_loader_batches(tiny_synth_dataset):
    loader = DataLoader(_ds(tiny_synth_dataset), batch_size=5, collate_fn=collate_skip_bad)
    batch = next(iter(loader))
    assert batch["clip"].shape == (5, 3, 4, 24, 24) and batch["label"].shape == (5,)
    assert batch["num_bad"] == 0 and batch["index"].tolist() == [0, 1, 2, 3, 4]


def _mixed_root(tmp_path, synth_root):
    """2 good videos, a missing one, a corrupt one and a 3-frame one (too short for min 4)."""
    good = [l.split()[0] for l in (synth_root / "train.txt").read_text().splitlines()[:2]]
    for i, rel in enumerate(good):
        shutil.copy(synth_root / rel, tmp_path / f"good{i}.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    write_video(tmp_path / "short.mp4", np.zeros((3, 32, 32, 3), np.uint8))
    shutil.copy(synth_root / "classes.txt", tmp_path / "classes.txt")
    (tmp_path / "train.txt").write_text(
        "good0.mp4 0\nmissing.mp4 1\ncorrupt.mp4 2\ngood1.mp4 0\nshort.mp4 3\n")
    return tmp_path


def test_bad_videos_skipped_counted_warned_once(tmp_path, tiny_synth_dataset, caplog):
    root = _mixed_root(tmp_path, tiny_synth_dataset)
    ds = _ds(root, min_video_frames=4)
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_skip_bad)
    tracker = BadVideoTracker(max_bad_fraction=0.7, dataset=ds)
    with caplog.at_level(logging.WARNING, logger="ada3d_edge.data.dataset"):
        for _epoch in range(2):
            tracker.reset()
            for batch in loader:
                tracker.update(batch)
                tracker.check()
            assert batch["clip"].shape[0] == 2 and batch["index"].tolist() == [0, 3]
            assert (tracker.num_bad, tracker.num_seen) == (3, 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3                                # once per video, not per epoch
    assert any("missing.mp4" in w and "not found" in w for w in warnings)
    assert any("short.mp4" in w and "too short" in w for w in warnings)
    assert ds.num_bad == 3
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.bad_videos()] == ["missing.mp4", "corrupt.mp4",
                                                                 "short.mp4"]
    assert tracker.summary() == "3 of 5 videos unreadable (60.0%)"
    with pytest.raises(RuntimeError, match=r"3 of 5 videos unreadable \(60.0%\) > "
                                           r"max_bad_fraction=0.5; first bad: .*missing.mp4: "):
        tracker.check(max_bad_fraction=0.5)


def test_bad_videos_with_workers(tmp_path, tiny_synth_dataset):
    root = _mixed_root(tmp_path, tiny_synth_dataset)
    ds = _ds(root, min_video_frames=4)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip_bad)
    tracker = BadVideoTracker(max_bad_fraction=0.0, dataset=ds)
    for batch in loader:
        tracker.update(batch)
    assert (tracker.num_bad, tracker.num_seen) == (3, 5)
    assert ds.num_bad == 3                                   # flags shared from the workers
    path, reason = ds.bad_videos(limit=1)[0]
    assert path.endswith("missing.mp4") and "not found" in reason
    with pytest.raises(RuntimeError, match="first bad: .*missing.mp4: file not found"):
        tracker.check()


def test_worker_rng_reproducible_and_varies_per_epoch(tiny_synth_dataset):
    ds = _ds(tiny_synth_dataset, short_side_range=(32, 48))

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_skip_bad,
                            generator=g)
        return torch.cat([b["clip"] for b in loader])

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_collate_all_bad_and_check_bad_fraction():
    batch = collate_skip_bad([None, None])
    assert batch["clip"] is None and batch["num_bad"] == 2 and len(batch["index"]) == 0
    check_bad_fraction(1, 10, 0.1)
    with pytest.raises(RuntimeError, match="2 of 10 videos unreadable"):
        check_bad_fraction(2, 10, 0.1, ("/x.mp4", "broken"))
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadVideoTracker(1.5)


def test_container_frame_count_lies(tiny_synth_dataset, monkeypatch):
    real_probe = dataset_mod.probe
    monkeypatch.setattr(dataset_mod, "probe", lambda path, template: VideoInfo(
        real_probe(path, template).num_frames + 50, 25.0, 32, 32))
    ds = _ds(tiny_synth_dataset, split="test", list_name="val.txt", num_frames=8, stride=4)
    item = ds[0]                                            # resampled over the 16 real frames
    assert item is not None and item["clip"].shape == (3, 3, 8, 32, 32) and ds.num_bad == 0


def test_multi_label_and_rawframes(tmp_path, tiny_synth_dataset):
    rel = (tiny_synth_dataset / "train.txt").read_text().split()[0]
    shutil.copy(tiny_synth_dataset / rel, tmp_path / "a.mp4")
    folder = tmp_path / "b_frames"
    folder.mkdir()
    for i, f in enumerate(read_video_frames(tmp_path / "a.mp4", range(16))):
        cv2.imwrite(str(folder / f"img_{i + 1:05d}.jpg"), f[..., ::-1])
    shutil.copy(tiny_synth_dataset / "classes.txt", tmp_path / "classes.txt")
    (tmp_path / "train.txt").write_text("a.mp4 0,2\nb_frames 5\n")
    ds = _ds(tmp_path)
    assert ds.multi_label
    first, second = ds[0], ds[1]
    assert first["label"].dtype == torch.float32 and first["label"].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    assert second["label"].tolist()[5] == 1.0 and second["clip"].shape == (3, 4, 24, 24)
    with pytest.raises(ValueError, match="multi_label=False"):
        _ds(tmp_path, multi_label=False)


def test_missing_inputs_raise_before_work(tmp_path, tiny_synth_dataset):
    root = tiny_synth_dataset
    with pytest.raises(FileNotFoundError, match="list file .*nope.txt.*list_file"):
        VideoListDataset(root / "nope.txt", root, root / "classes.txt")
    with pytest.raises(FileNotFoundError, match="classes file .*classes_file"):
        VideoListDataset(root / "train.txt", root, tmp_path / "classes.txt")
    with pytest.raises(FileNotFoundError, match="data root .*set it with root"):
        VideoListDataset(root / "train.txt", tmp_path / "absent", root / "classes.txt")
    with pytest.raises(ValueError, match="split='val'"):
        VideoListDataset(root / "train.txt", root, root / "classes.txt", split="val")
