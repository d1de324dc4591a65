"""The `ada3d` command line: thin click wrappers that parse options and call the package.

Heavy imports (torch, onnx) happen inside each command so `ada3d --help` and the runtime
commands stay fast and torch-free.
"""
from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ada3d")
def main() -> None:
    """Ada3D: adaptive 3D convolution selection for efficient video recognition, on the edge."""


# --- foundation: flops -------------------------------------------------------------------------

# --- data: synth -------------------------------------------------------------------------------

# --- training: train / eval --------------------------------------------------------------------

# --- export: export / build-engines ------------------------------------------------------------

# --- runtime: run ------------------------------------------------------------------------------

# --- bench / demo ------------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
