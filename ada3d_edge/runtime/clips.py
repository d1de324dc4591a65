"""Clips for the benchmark, read (or generated) one at a time on every pass over them.

Memory holds one clip whatever the count (``ada3d bench --clips 100000``): a ``ClipSet`` knows how
to make clip ``i`` and makes it when iterated. Videos are read through the torch-free video reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..bundle import Bundle

Clip = tuple[np.ndarray, tuple[int, ...]]  # (T, H, W, 3) uint8 RGB frames, labels (empty: none)
Log = Callable[[str], None]


@dataclass
class ClipSet:
    """``count`` clips made on demand by ``make(i)`` (None: clip ``i`` is skipped, e.g. unreadable)."""

    description: str
    count: int
    make: Callable[[int], Clip | None]
    skipped: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Clip]:
        for i in range(self.count):
            clip = self.make(i)
            if clip is None:
                self.skipped.add(i)
                continue
            yield clip


def list_clips(bundle: Bundle, list_file: str, root: str, num_videos: int | None,
               log: Log | None = None) -> ClipSet:
    """The centre test clip (eval sampling) of ``num_videos`` videos spread over the list (all: None).

    Fails now (ValueError) when the list is bad or none of its videos can be read, before any timing.
    """
    from ..data.lists import load_list
    from ..data.video import VideoReadError, read_center_clip

    m = bundle.manifest
    records = load_list(list_file, root, len(m.classes), list_option="--data", root_option="--root")
    if num_videos is not None and num_videos < len(records):
        records = [records[i] for i in np.linspace(0, len(records) - 1, num_videos).round().astype(int)]
    reported: set[int] = set()

    def make(i: int) -> Clip | None:
        try:
            return read_center_clip(records[i].path, m.num_frames, m.stride), records[i].labels
        except VideoReadError as exc:
            if log and i not in reported:
                log(f"skipped {exc}")
            reported.add(i)
            return None

    if not any(make(i) is not None for i in range(len(records))):  # stops at the first readable one
        raise ValueError(f"no video of {list_file} could be read (root {root}); check --data and --root")
    return ClipSet(f"{len(records)} centre clips of {list_file}", len(records), make)


def generated_clips(bundle: Bundle, num: int, seed: int = 0) -> ClipSet:
    """Random uint8 clips ``(T, S, 4S/3, 3)`` (S = short side), without labels; clip i is the same
    on every pass."""
    m = bundle.manifest
    s = m.short_side or m.crop_size

    def make(i: int) -> Clip:
        rng = np.random.default_rng([seed, i])
        return rng.integers(0, 256, (m.num_frames, s, s * 4 // 3, 3), dtype=np.uint8), ()

    return ClipSet(f"{num} generated clips of random uint8 frames (no --data): the policy sees noise, "
                   "so its choices (and accuracy) say nothing about real video", num, make)
