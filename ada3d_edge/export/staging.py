"""Where an export writes: a hidden temporary sibling of the target, renamed into place at the end.

Temporary directories are named ``.<target>.tmp-<pid>-<random>`` (and ``.<target>.old-<pid>-<random>``
for the bundle being replaced), so a later export of the same target can tell its own leftovers from
anything else and from the temp dirs of an export still running: only those whose process is gone
(or whose pid now belongs to a process started after them) are removed. ``--overwrite`` replaces only a
directory that is an ada3d bundle.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from ..bundle import FORMAT, MANIFEST_NAME, apply_umask

_KINDS = ("tmp", "old")


def _prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _pattern(target: Path) -> "re.Pattern[str]":
    return re.compile(rf"\.{re.escape(target.name)}\.({'|'.join(_KINDS)})-(\d+)-[A-Za-z0-9_]+")


def make_temp_dir(target: Path, kind: str = "tmp") -> Path:
    """A new empty ``.<target>.<kind>-<pid>-<random>`` directory beside ``target``."""
    return Path(tempfile.mkdtemp(prefix=_prefix(target, kind), dir=target.parent))


def _process_start(pid: int) -> Optional[float]:
    """Start time (epoch seconds) of a live process from /proc, or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path, pid: int) -> bool:
    """True when the process that made ``path`` is gone, or ``pid`` now names a newer process."""
    if not _alive(pid):
        return True
    start = _process_start(pid)
    try:
        made = path.stat().st_mtime
    except OSError:
        return False
    return start is not None and made < start - 1.0  # 1 s: /proc start times are in clock ticks


def clear_stale_temp_dirs(target: Path) -> List[Path]:
    """Remove this target's temp dirs left by killed exports; return what was removed.

    A leftover ``old`` directory while the target itself is missing means an export was killed
    between the two renames of the swap: it is the previous bundle and is put back, not removed.
    """
    pattern = _pattern(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for path in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or not path.is_dir() or path.is_symlink() or not _stale(path, int(match.group(2))):
            continue
        if match.group(1) == "old" and not target.exists() and is_bundle_dir(path):
            os.replace(path, target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def is_bundle_dir(path: Path) -> bool:
    """True for a directory holding an ada3d ``manifest.json`` and no sub-directories."""
    return _not_a_bundle(path) is None


def _not_a_bundle(path: Path) -> Optional[str]:
    """Why ``path`` is not an ada3d bundle directory, or None if it is one."""
    manifest = path / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it holds no {MANIFEST_NAME}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"its {MANIFEST_NAME} is not readable JSON ({exc})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"its {MANIFEST_NAME} is not an ada3d bundle manifest (format != {FORMAT!r})"
    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() or p.is_symlink())
    if subdirs:
        return f"it holds {subdirs}, which no bundle has"
    return None


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a target the export must not replace (FileExistsError naming it and the way on)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise FileExistsError(f"{out_dir} exists and is not a directory; choose another --out")
    blocking = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise FileExistsError(f"{out_dir}: {blocking} is a file, not a directory; choose another --out")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass --overwrite (overwrite=True) to replace it")
    reason = _not_a_bundle(out_dir)
    if reason:
        raise FileExistsError(f"{out_dir} is not an ada3d bundle ({reason}); --overwrite only replaces a "
                              "bundle written by `ada3d export`: choose another --out or empty it yourself")


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir`` (mode from the umask); an old bundle is moved aside, then removed."""
    apply_umask(tmp, directory=True)
    old: Optional[Path] = None
    if out_dir.exists():
        old = make_temp_dir(out_dir, "old")
        os.rmdir(old)
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
