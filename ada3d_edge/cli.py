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
@main.command()
@click.argument("arch")
@click.option("--frames", "-t", type=click.IntRange(1), default=None, help="T (default: the arch's).")
@click.option("--crop", type=click.IntRange(16), default=None, help="Crop size (default: the arch's).")
@click.option("--policy-width", type=float, default=1.0, show_default=True, help="Selection net width.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def flops(arch: str, frames, crop, policy_width: float, as_json: bool) -> None:
    """GFLOPs of ARCH for every stage mask and every kept-frame count 1..T, with the ratio to Upper."""
    from .flops_report import flops_report

    try:
        click.echo(flops_report(arch, frames, crop, policy_width, as_json))
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


# --- data: synth -------------------------------------------------------------------------------

# --- training: train / eval --------------------------------------------------------------------

# --- export: export / build-engines ------------------------------------------------------------

# --- runtime: run ------------------------------------------------------------------------------

# --- bench / demo ------------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
