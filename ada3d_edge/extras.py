"""Optional dependencies (the extras of setup.cfg): a command checks its own before doing any work.

The runtime install (`pip install ada3d-edge`) has no torch; `train`, `eval`, `sweep`, `export` and
`demo` then say in one line which extra to install instead of failing later with an import error.
"""
from __future__ import annotations

import importlib

import click

NAMES = {"torch": "PyTorch", "onnx": "ONNX", "matplotlib": "matplotlib", "tensorrt": "TensorRT"}


class MissingExtraError(click.ClickException):
    """A module of an optional extra is not installed (click prints it as one `Error:` line, exit 1)."""


def require(module: str, extra: str, command: str) -> None:
    """Import `module` or raise MissingExtraError naming the `extra` that provides it.

    Example: ``require("torch", "train", "train")`` -> ``ada3d train needs PyTorch: pip install
    "ada3d-edge[train]"``.
    """
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f'ada3d {command} needs {NAMES.get(module, module)}: '
                                f'pip install "ada3d-edge[{extra}]"') from None
