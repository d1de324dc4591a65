"""List-file video dataset for training and evaluation, and the bookkeeping of unreadable videos.

Items (`VideoListDataset`):

* ``split="train"``: one random clip (random start, random short-side scale + crop + flip)::

      {"clip": (3, T, crop, crop) float32, "policy": (3, T, P, P) float32,
       "label": () int64 | (C,) float32 multi-hot, "index": int}

* ``split="test"``: ``num_clips`` uniformly spaced clips, short side resized to ``test_crop_size``,
  centre-cropped and normalised by `ada3d_edge.preprocess.preprocess_eval`, which composes the
  functions the runtime's predictor calls on a clip (`center_crop_frames`, `to_policy_tensor`,
  `to_clip_tensor`; the runtime's short side is the bundle's, which training checkpoints leave at
  the crop size), so evaluation sees what the device sees::

      {"clip": (N, 3, T, S, S), "policy": (N, 3, T, P, P), "label": ..., "index": int}

Unreadable videos (missing, corrupt, too short) never crash a run. Use it like this::

    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate_skip_bad)
    tracker = BadVideoTracker(max_bad_fraction=0.01, dataset=ds)
    for epoch in range(epochs):
        tracker.reset()                      # counts are per epoch
        for batch in loader:
            tracker.update(batch)            # adds batch["num_bad"] and the batch size
            tracker.check()                  # RuntimeError once too many videos are unreadable
            if batch["clip"] is None:        # every item of this batch was unreadable
                continue
            ...
        log(tracker.summary())               # "2 of 640 videos unreadable (0.3%)"

``dataset[i]`` returns None for an unreadable video; the first time a video fails a warning naming the
path and the reason is logged (``logging``, logger ``ada3d_edge.data.dataset``), once per video across
epochs and DataLoader workers. `collate_skip_bad` drops the None items and puts their count in
``batch["num_bad"]``. The dataset also flags bad indices in shared memory, so the main process sees
them even with ``num_workers > 0`` (``dataset.num_bad``, ``dataset.bad_videos()``).

Randomness: each process (main or DataLoader worker) draws from its own numpy generator seeded with
``seed`` and, in a worker, the worker's torch seed (different per worker and per epoch, reproducible
with ``torch.manual_seed``). Test items are deterministic.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from ..preprocess import (KINETICS_MEAN, KINETICS_STD, clip_indices, preprocess_eval,
                          random_clip_start, random_resized_crop_frames, to_clip_tensor,
                          to_policy_tensor, uniform_clip_starts)
from .lists import VideoRecord, is_multi_label, load_classes, load_list, require_dir, require_file
from .video import DEFAULT_TEMPLATE, PathLike, VideoReadError, probe, read_frames

logger = logging.getLogger(__name__)

__all__ = ["VideoListDataset", "collate_skip_bad", "BadVideoTracker", "check_bad_fraction"]

SPLITS = ("train", "test")


class VideoListDataset(Dataset):
    """Clips from the videos of a list file (see the module docstring for items and bad videos).

    Args:
        list_file: ``path label`` / ``path l1,l2`` lines (`ada3d_edge.data.lists`).
        root: folder the list's paths are relative to.
        classes_file: one class name per line.
        split: ``"train"`` (random clip, augmentation) or ``"test"`` (``num_clips`` centre crops).
        num_frames, stride: T frames, ``stride`` apart (PySlowFast sampling).
        crop_size, short_side_range, flip: training crop, short-side jitter range, horizontal flip.
            Turn ``flip`` off for data where left/right is the label (the synthetic dataset).
        test_crop_size, num_clips: test short side = crop side, clips per video.
        policy_size, mean, std: selection-network input size and normalisation (RGB, 0..1 scale).
        multi_label: None = auto (any line with several labels); labels become multi-hot floats.
        seed: base seed of the training augmentation.
        min_video_frames: videos with fewer decodable frames are treated as unreadable.
        template: file names inside rawframe folders (list paths that are directories).
    """

    def __init__(self, list_file: PathLike, root: PathLike, classes_file: PathLike, *,
                 split: str = "train", num_frames: int = 8, stride: int = 8, crop_size: int = 224,
                 short_side_range: Tuple[int, int] = (256, 320), test_crop_size: int = 256,
                 num_clips: int = 10, policy_size: int = 112,
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                 multi_label: Optional[bool] = None, seed: int = 0, flip: bool = True,
                 min_video_frames: int = 1, template: str = DEFAULT_TEMPLATE) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        for name, value in (("num_frames", num_frames), ("stride", stride), ("crop_size", crop_size),
                            ("test_crop_size", test_crop_size), ("num_clips", num_clips),
                            ("policy_size", policy_size), ("min_video_frames", min_video_frames)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        lo, hi = short_side_range
        if split == "train" and not crop_size <= lo <= hi:
            raise ValueError(f"short_side_range={tuple(short_side_range)} must satisfy crop_size "
                             f"({crop_size}) <= min <= max")
        # Every path is checked before anything is parsed or decoded.
        require_file(classes_file, "classes file", "classes_file")
        require_file(list_file, "list file", "list_file")
        require_dir(root, "data root", "root")
        self.classes: List[str] = load_classes(classes_file)
        self.records: List[VideoRecord] = load_list(list_file, root, len(self.classes))
        auto = is_multi_label(self.records)
        if multi_label is False and auto:
            raise ValueError(f"multi_label=False but {list_file} has lines with several labels; "
                             f"pass multi_label=None (auto) or True")
        self.multi_label = auto if multi_label is None else bool(multi_label)
        self.split = split
        self.num_frames, self.stride = int(num_frames), int(stride)
        self.crop_size, self.short_side_range = int(crop_size), (int(lo), int(hi))
        self.test_crop_size, self.num_clips = int(test_crop_size), int(num_clips)
        self.policy_size = int(policy_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.seed, self.flip = int(seed), bool(flip)
        self.min_video_frames, self.template = int(min_video_frames), template
        # Bad-video flags live in shared memory so DataLoader workers' marks reach the main process.
        self._bad_flags = torch.zeros(len(self.records), dtype=torch.uint8).share_memory_()
        self._bad_reasons: Dict[int, str] = {}      # this process only
        self._counts: Dict[str, int] = {}           # frame count per path (probed once)
        self._corrected: set = set()                # paths whose container count was wrong
        self._rng: Optional[np.random.Generator] = None
        self._rng_key: Optional[int] = None

    # --- public ----------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:
        record = self.records[index]
        try:
            clips = self._load_clips(record)
        except VideoReadError as e:
            self._mark_bad(index, e)
            return None
        if self.split == "train":
            crops = random_resized_crop_frames(clips[0], self.crop_size, self.short_side_range,
                                               self.flip, self._generator())
            clip = to_clip_tensor(crops, self.mean, self.std)
            policy = to_policy_tensor(crops, self.policy_size, self.mean, self.std)
        else:
            pairs = [preprocess_eval(c, self.test_crop_size, self.policy_size, self.mean, self.std)
                     for c in clips]
            clip = np.stack([p[0] for p in pairs])
            policy = np.stack([p[1] for p in pairs])
        return {"clip": torch.from_numpy(clip), "policy": torch.from_numpy(policy),
                "label": self.label_tensor(index), "index": int(index)}

    def label_tensor(self, index: int) -> torch.Tensor:
        """() int64 class index, or (C,) float32 multi-hot when ``multi_label``."""
        labels = self.records[index].labels
        if self.multi_label:
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[list(labels)] = 1.0
            return target
        return torch.tensor(labels[0], dtype=torch.long)

    @property
    def num_bad(self) -> int:
        """Distinct videos found unreadable so far, in any process."""
        return int(self._bad_flags.sum())

    def bad_videos(self, limit: Optional[int] = None) -> List[Tuple[str, str]]:
        """``(path, reason)`` of the videos flagged unreadable, in list order.

        A video flagged by a DataLoader worker is read again here to recover the reason.
        """
        out = []
        for i in torch.nonzero(self._bad_flags).flatten().tolist()[:limit]:
            reason = self._bad_reasons.get(i)
            if reason is None:
                try:
                    self._load_clips(self.records[i])
                    reason = "failed in a DataLoader worker, reads now"
                except VideoReadError as e:
                    reason = e.reason
                self._bad_reasons[i] = reason
            out.append((self.records[i].path, reason))
        return out

    def __repr__(self) -> str:
        kind = "multi-label" if self.multi_label else "single-label"
        return (f"{type(self).__name__}(split={self.split!r}, videos={len(self)}, "
                f"classes={self.num_classes} {kind}, T={self.num_frames}, stride={self.stride})")

    # --- internals -------------------------------------------------------------------------------

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        key = None if info is None else int(info.seed)
        if self._rng is None or key != self._rng_key:
            self._rng = np.random.default_rng([self.seed] if key is None else [self.seed, key])
            self._rng_key = key
        return self._rng

    def _video_length(self, path: str) -> int:
        n = self._counts.get(path)
        if n is None:
            n = self._counts[path] = probe(path, self.template).num_frames
        if n < self.min_video_frames:
            raise VideoReadError(path, f"too short: {n} frames < min_video_frames="
                                       f"{self.min_video_frames}")
        return n

    def _indices(self, n: int) -> List[np.ndarray]:
        if self.split == "train":
            starts = [random_clip_start(n, self.num_frames, self.stride, self._generator())]
        else:
            starts = uniform_clip_starts(n, self.num_frames, self.stride, self.num_clips)
        return [clip_indices(s, self.num_frames, self.stride, n) for s in starts]

    def _load_clips(self, record: VideoRecord) -> List[np.ndarray]:
        """Frames of each clip, ``[(T, H, W, 3) uint8]``; one decoding pass for all clips."""
        path = record.path
        n = self._video_length(path)
        per_clip = self._indices(n)
        try:
            frames = read_frames(path, np.concatenate(per_clip), self.template)
        except VideoReadError as e:
            # The container promised more frames than decode: resample once with the real count.
            if not e.num_decoded or path in self._corrected:
                raise
            self._corrected.add(path)
            self._counts[path] = e.num_decoded
            n = self._video_length(path)
            per_clip = self._indices(n)
            frames = read_frames(path, np.concatenate(per_clip), self.template)
        t = self.num_frames
        return [frames[i * t:(i + 1) * t] for i in range(len(per_clip))]

    def _mark_bad(self, index: int, error: VideoReadError) -> None:
        first = int(self._bad_flags[index]) == 0
        self._bad_flags[index] = 1
        self._bad_reasons[index] = error.reason
        if first:
            logger.warning("skipping unreadable video %s: %s", error.path, error.reason)


def collate_skip_bad(batch: Sequence[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """Collate dataset items, dropping unreadable ones (None) and counting them in ``num_bad``.

    Returns:
        ``{"clip", "policy", "label", "index", "num_bad"}`` with the usual stacked tensors; when every
        item was unreadable, ``clip``/``policy``/``label`` are None and ``index`` is empty.
    """
    good = [item for item in batch if item is not None]
    num_bad = len(batch) - len(good)
    if not good:
        return {"clip": None, "policy": None, "label": None,
                "index": torch.empty(0, dtype=torch.long), "num_bad": num_bad}
    out = default_collate(good)
    out["num_bad"] = num_bad
    return out


def check_bad_fraction(num_bad: int, num_seen: int, max_bad_fraction: float,
                       first_bad: Optional[Tuple[str, str]] = None, setting: str = "max_bad_fraction") -> None:
    """Raise RuntimeError when ``num_bad / num_seen > max_bad_fraction``.

    ``first_bad`` = ``(path, reason)`` of an unreadable video, quoted in the message; ``setting`` names
    where the user raises the limit (a recipe key or a command-line option).
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction!r}")
    if num_bad < 0 or num_seen < num_bad:
        raise ValueError(f"need 0 <= num_bad <= num_seen, got num_bad={num_bad} num_seen={num_seen}")
    if num_seen == 0 or num_bad / num_seen <= max_bad_fraction:
        return
    where = (f"first bad: {first_bad[0]}: {first_bad[1]}" if first_bad else
             "the paths are in the warnings logged above")
    raise RuntimeError(f"{num_bad} of {num_seen} videos unreadable ({100.0 * num_bad / num_seen:.1f}%)"
                       f" > max_bad_fraction={max_bad_fraction}; {where}. Fix or remove those "
                       f"videos from the list, or raise {setting}")


class BadVideoTracker:
    """Counts unreadable videos over an epoch and enforces ``max_bad_fraction``.

    Args:
        max_bad_fraction: largest tolerated fraction of unreadable videos (0.0 = none).
        dataset: when given, the error message names the first bad video and its reason.
        setting: where the user raises the limit, named in the error message.
    """

    def __init__(self, max_bad_fraction: float = 0.0,
                 dataset: Optional[VideoListDataset] = None, setting: str = "max_bad_fraction") -> None:
        check_bad_fraction(0, 0, max_bad_fraction)  # validates the fraction
        self.max_bad_fraction = float(max_bad_fraction)
        self.dataset = dataset
        self.setting = setting
        self.num_bad = 0
        self.num_seen = 0

    def reset(self) -> None:
        """Start a new epoch's counts."""
        self.num_bad = self.num_seen = 0

    def update(self, batch: Dict[str, Any]) -> None:
        """Add a `collate_skip_bad` batch: its ``num_bad`` and its size including the bad items."""
        self.num_bad += int(batch["num_bad"])
        self.num_seen += int(batch["num_bad"]) + len(batch["index"])

    @property
    def fraction(self) -> float:
        return self.num_bad / self.num_seen if self.num_seen else 0.0

    def summary(self) -> str:
        return f"{self.num_bad} of {self.num_seen} videos unreadable ({100.0 * self.fraction:.1f}%)"

    def check(self, num_bad: Optional[int] = None, num_seen: Optional[int] = None,
              max_bad_fraction: Optional[float] = None) -> None:
        """Raise RuntimeError when the fraction is exceeded (defaults: this tracker's counts)."""
        num_bad = self.num_bad if num_bad is None else int(num_bad)
        num_seen = self.num_seen if num_seen is None else int(num_seen)
        limit = self.max_bad_fraction if max_bad_fraction is None else float(max_bad_fraction)
        try:
            check_bad_fraction(num_bad, num_seen, limit)
        except RuntimeError:
            first = self.dataset.bad_videos(limit=1) if self.dataset is not None else []
            check_bad_fraction(num_bad, num_seen, limit, first[0] if first else None, self.setting)
