"""A training stage's output folder: refuse to run over an earlier run, and clear only our own files.

A stage writes `<output_dir>/<stage>/` (see trainer.py). Running a stage again into a folder that
holds an earlier run's checkpoints or metrics is refused unless the caller says how to go on: resume
it, or overwrite it (which removes the files a training run writes there, and nothing else).
Torch-free, so the CLI checks every stage before any work.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

EARLIER_RUN = ("final.pt", "last.pt", "metrics.csv")  # any of these: a run already wrote here
OWN_FILES = EARLIER_RUN + ("config.yaml",)
OWN_PATTERNS = (".final.pt.*.tmp", ".last.pt.*.tmp", "tb/events.out.tfevents.*")  # temp saves, TensorBoard


class OutputExistsError(FileExistsError):
    """The stage's folder holds an earlier run and neither resume nor overwrite was asked for."""


def check_stage_dir(path: Union[str, Path], stage: str, resume: bool = False, overwrite: bool = False) -> None:
    """Raise OutputExistsError naming `path` and the ways on when it holds an earlier run."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in the output folder and --overwrite replaces it: "
                         "pass one of them")
    if resume or overwrite:
        return
    path = Path(path)
    found = [name for name in EARLIER_RUN if (path / name).exists()]
    if found:
        raise OutputExistsError(
            f"{path} already holds {', '.join(found)} of an earlier {stage} run; continue it with --resume, "
            f"replace its checkpoints and metrics with --overwrite, or write elsewhere with --output-dir DIR")


def clear_stage_outputs(path: Union[str, Path]) -> List[Path]:
    """Remove the files a training run writes in `path` (checkpoints, metrics, config, TensorBoard
    events, temp saves); every other file and folder stays. Returns what was removed."""
    path = Path(path)
    removed = [path / name for name in OWN_FILES if (path / name).is_file()]
    for pattern in OWN_PATTERNS:
        removed += [p for p in path.glob(pattern) if p.is_file()]
    for p in removed:
        p.unlink()
    return removed
