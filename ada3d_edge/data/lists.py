"""List files (mmaction2 / PySlowFast style) and class files — torch-free.

A list file has one video per line, ``path label`` or, multi-label, ``path l1,l2,l3``; ``path`` is
relative to a root folder (absolute paths are kept) and may be a video file or a rawframe folder.
Blank lines and lines starting with ``#`` are ignored. Paths cannot contain whitespace. A classes
file has one class name per line; label ``i`` is line ``i`` (0-based, blank lines skipped).

Missing files are reported before any work starts, naming the option that sets them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .video import PathLike

__all__ = ["VideoRecord", "load_list", "load_classes", "is_multi_label", "require_file",
           "require_dir"]


@dataclass(frozen=True)
class VideoRecord:
    """One line of a list file: the video's full path and its label indices."""

    path: str
    labels: Tuple[int, ...]

    @property
    def label(self) -> int:
        """The single label (ValueError for a multi-label record)."""
        if len(self.labels) != 1:
            raise ValueError(f"{self.path} has {len(self.labels)} labels {self.labels}; "
                             f"use .labels for multi-label data")
        return self.labels[0]


def require_file(path: PathLike, what: str, option: str) -> str:
    """Return ``path`` as str, or raise FileNotFoundError saying what it is and which option sets it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        state = "is a directory, not a file" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(f"{what} {path!r} {state}; set it with {option}")
    return path


def require_dir(path: PathLike, what: str, option: str) -> str:
    """Return ``path`` as str, or raise FileNotFoundError saying what it is and which option sets it."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        state = "is a file, not a directory" if os.path.isfile(path) else "not found"
        raise FileNotFoundError(f"{what} {path!r} {state}; set it with {option}")
    return path


def _content_lines(path: str):
    with open(path, "r", encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield lineno, line


def load_classes(classes_file: PathLike, option: str = "classes_file") -> List[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: the file is missing (message names ``option``).
        ValueError: no classes, or a name repeated.
    """
    path = require_file(classes_file, "classes file", option)
    names: List[str] = []
    first_line = {}
    for lineno, name in _content_lines(path):
        if name in first_line:
            raise ValueError(f"{path}:{lineno}: class {name!r} repeats line {first_line[name]}; "
                             f"each class name must appear once")
        first_line[name] = lineno
        names.append(name)
    if not names:
        raise ValueError(f"classes file {path} lists no classes; write one class name per line")
    return names


def _parse_labels(text: str, where: str, num_classes: Optional[int]) -> Tuple[int, ...]:
    labels = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"{where}: label {part!r} is not an integer; expected 'path label' or "
                             f"'path l1,l2' with 0-based class indices") from None
        if value < 0 or (num_classes is not None and value >= num_classes):
            valid = "0.." + str(num_classes - 1) if num_classes is not None else ">= 0"
            raise ValueError(f"{where}: label {value} out of range (valid: {valid}); check that "
                             f"the list matches the classes file")
        labels.append(value)
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: repeated label in {text!r}")
    return tuple(labels)


def load_list(list_file: PathLike, root: PathLike, num_classes: Optional[int] = None, *,
              list_option: str = "list_file", root_option: str = "root") -> List[VideoRecord]:
    """Parse a list file into records with paths joined to ``root``.

    Args:
        list_file: the list file.
        root: folder the list's relative paths start from.
        num_classes: when given, labels must be in ``0..num_classes-1``.
        list_option, root_option: option names quoted in errors (e.g. ``data.train_list``).

    Raises:
        FileNotFoundError: list file or root missing (checked before parsing).
        ValueError: a malformed line or out-of-range label (``file:line`` in the message), or an
            empty list.

    Video files themselves are not checked here: an unreadable video is the dataset's business.
    """
    path = require_file(list_file, "list file", list_option)
    root = require_dir(root, "data root", root_option)
    records: List[VideoRecord] = []
    for lineno, line in _content_lines(path):
        where = f"{path}:{lineno}"
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'path label' or 'path l1,l2' (2 fields, no spaces "
                             f"in paths), got {len(parts)} fields: {line!r}")
        rel, label_text = parts
        labels = _parse_labels(label_text, where, num_classes)
        records.append(VideoRecord(path=os.path.join(root, rel), labels=labels))
    if not records:
        raise ValueError(f"list file {path} has no videos; write one 'path label' line per video")
    return records


def is_multi_label(records: Sequence[VideoRecord]) -> bool:
    """True when any record has other than exactly one label."""
    return any(len(r.labels) != 1 for r in records)
