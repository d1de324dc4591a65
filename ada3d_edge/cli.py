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
@click.option("--policy-width", type=click.FloatRange(0.0, min_open=True), default=1.0, show_default=True,
              help="Selection net width.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def flops(arch: str, frames, crop, policy_width: float, as_json: bool) -> None:
    """GFLOPs of ARCH for every stage mask and every kept-frame count 1..T, with the ratio to Upper."""
    from .flops_report import flops_report

    try:
        click.echo(flops_report(arch, frames, crop, policy_width, as_json))
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


# --- data: synth -------------------------------------------------------------------------------
from .data.synth_sets import CLASS_SETS as _CLASS_SETS  # noqa: E402  (plain data, no cv2)

@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", "num_classes", type=int, default=8, show_default=True,
              help="Number of classes: 4, 8, 12 or 16; half static, half motion (in pairs).")
@click.option("--videos-per-class", type=click.IntRange(1), default=20, show_default=True,
              help="Training videos per class.")
@click.option("--val-per-class", type=click.IntRange(0), default=5, show_default=True,
              help="Validation videos per class.")
@click.option("--size", type=click.IntRange(16), default=64, show_default=True, help="Frame width and height.")
@click.option("--frames", type=click.IntRange(2), default=40, show_default=True, help="Frames per video.")
@click.option("--fps", type=click.FloatRange(0.0, min_open=True), default=25.0, show_default=True,
              help="Frame rate written.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; same seed, same data.")
@click.option("--class-set", type=click.Choice(list(_CLASS_SETS)), default="a", show_default=True,
              help="a: the demo's classes; b: other classes, appearances and motions (for policy "
                   "transfer between two datasets, the paper's Table 3).")
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out: str, num_classes: int, videos_per_class: int, val_per_class: int, size: int,
          frames: int, fps: float, seed: int, class_set: str, overwrite: bool, quiet: bool) -> None:
    """Write a synthetic static/motion video dataset (mp4 + list files) to OUT."""
    from .data.synth import make_synth_dataset, synth_classes

    try:
        synth_classes(num_classes)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--classes'") from None
    try:
        info = make_synth_dataset(out, num_classes=num_classes, videos_per_class=videos_per_class,
                                  val_per_class=val_per_class, size=size, frames=frames, fps=fps,
                                  seed=seed, progress=not quiet, overwrite=overwrite, class_set=class_set)
    except (ValueError, FileExistsError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {info['num_train']} train + {info['num_val']} val videos of "
               f"{info['num_classes']} classes (set {info['class_set']}) to {out} "
               f"(lists: train.txt, val.txt, classes.txt)")


# --- training: train / eval --------------------------------------------------------------------
from .train.commands import COMMANDS as _TRAIN_COMMANDS  # noqa: E402  (click only; torch loads on use)
from .bundle import ORT_BACKBONE_LAYOUTS  # noqa: E402  (plain data and json)

for _cmd in _TRAIN_COMMANDS:  # ada3d train | eval | sweep
    main.add_command(_cmd)


# --- export: export / build-engines ------------------------------------------------------------
@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), required=True, help="Bundle directory to write.")
@click.option("--opset", type=click.IntRange(17), default=17, show_default=True, help="ONNX opset.")
@click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check of every file.")
@click.option("--fold", "fold", type=click.Choice(["measure", "auto", "all", "degraded", "none"]), default="measure",
              show_default=True,
              help="Which temporal-kernel-1 convs become Conv2d over folded frames: per configuration the "
                   "faster of auto and none, timed on this machine (measure); the 2D tail of each "
                   "configuration and degraded stages (auto); all of them; only degraded stages (degraded); "
                   "none (degraded stages as Conv3d(1,k,k)).")
@click.option("--no-fold", is_flag=True, help="Same as --fold degraded.")
@click.option("--measure-seconds", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Time budget of --fold measure and of --ort-layout measure, each (at least two rounds of every "
                   "configuration at T' 1, T/2, T).")
@click.option("--local-weights", type=click.FloatRange(0, 1), default=None,
              help="Share of the weight bytes, smallest segments first, kept inside their If branches so "
                   "ONNX Runtime's NCHWc layout runs there (faster folded 2D convs, private copies: more "
                   "memory); 0 = all weights shared.  [default: 0.1]")
@click.option("--ort-layout", "ort_layout", type=click.Choice(["measure", *ORT_BACKBONE_LAYOUTS]), default="measure",
              show_default=True,
              help="The backbone layout `ada3d run` uses on ONNX Runtime by default: the flat graph per "
                   "configuration where it fits 1.3x Upper's memory and is faster here (measure), the one "
                   "If graph (graph), a flat graph per configuration (configs), or the segment files (segments).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(checkpoint: str, out: str, opset: int, no_verify: bool, fold: str, no_fold: bool,
               measure_seconds: float, local_weights: float | None, ort_layout: str, overwrite: bool,
               quiet: bool) -> None:
    """Export CHECKPOINT to a bundle: policy.onnx + one backbone ONNX per stage mask + manifest.json."""
    from .extras import require

    require("torch", "export", "export")
    require("onnx", "export", "export")
    from .export.exporter import export_bundle
    from .export.verify import VerificationError

    try:
        path = export_bundle(checkpoint, out, opset=opset, verify=not no_verify,
                             fold_frames="degraded" if no_fold else fold,
                             overwrite=overwrite, progress=not quiet, measure_seconds=measure_seconds,
                             local_weights=local_weights, ort_layout=ort_layout)
    except FileExistsError as e:
        raise click.UsageError(str(e)) from None
    except (ValueError, VerificationError) as e:  # bad checkpoint or option, failed check
        raise click.ClickException(str(e).strip().splitlines()[0]) from None
    except OSError as e:  # cannot write --out (permissions, disk full)
        raise click.ClickException(f"cannot write bundle {out}: {e}") from None
    click.echo(f"wrote bundle {path}" + (" (not verified)" if no_verify else " (verified in ONNX Runtime)"))


@main.command("build-engines")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Target profile YAML, e.g. export/jetson-orin-nano-fp16.yaml.")
@click.option("--fp16", is_flag=True, help="Build FP16 engines (overrides the profile).")
@click.option("--int8", is_flag=True, help="Build INT8 engines (needs --calib).")
@click.option("--calib", type=click.Path(exists=True, dir_okay=False), default=None,
              help="List file of calibration videos ('path label' lines, paths relative to its folder).")
@click.option("--calib-clips", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workspace", type=click.IntRange(1), default=None, help="Builder workspace in MB.")
@click.option("--max-batch", type=click.IntRange(1), default=None, help="Largest batch the engines accept.")
@click.option("--device", default="cuda", show_default=True, help="cuda or cuda:N.")
def build_engines_cmd(bundle: str, profile_path, fp16: bool, int8: bool, calib, calib_clips: int, workspace,
                      max_batch, device: str) -> None:
    """Build TensorRT engines for BUNDLE on this device and record them in its manifest."""
    from .export.profiles import EngineProfile, load_profile
    from .export.tensorrt import build_engines

    if fp16 and int8:
        raise click.UsageError("choose one of --fp16 and --int8")
    try:
        profile = load_profile(profile_path) if profile_path else EngineProfile()
        precision = "int8" if int8 else "fp16" if fp16 else None
        profile = profile.with_overrides(precision=precision, workspace_mb=workspace, max_batch=max_batch)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if profile.precision == "int8" and calib is None:
        raise click.UsageError("INT8 needs calibration clips: pass --calib LIST (list file of videos)")
    try:
        entries = build_engines(bundle, profile, calib_list=calib, calib_clips=calib_clips, device=device,
                                progress=click.echo)
    except (ImportError, ValueError, FileNotFoundError, RuntimeError) as e:  # no TensorRT, bad bundle, failed build
        raise click.ClickException(str(e)) from None
    click.echo(f"built {len(entries)} engines ({profile.precision}, max batch {profile.max_batch}) "
               f"on {entries[0].gpu_name} with TensorRT {entries[0].tensorrt_version}; "
               f"run them with `ada3d run {bundle} --backend trt`")


# --- runtime: run ------------------------------------------------------------------------------
from .runtime import backends as _backends  # noqa: E402  (the backend table only: no numpy, no onnxruntime)
_CAP_OPTION = click.option(
    "--cap", "cap", type=click.FloatRange(0.0, min_open=True), default=None,
    help="Frame cap: keep at most the frames that hold a clip's GFLOPs, selection net included, within "
         "CAP x Upper's (1 = never costlier than Upper), dropping the least probable kept frames. Default: off.")
_CAP_LUT_OPTION = click.option(
    "--cap-lut", "cap_lut", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Latency table of this bundle on this machine (`ada3d bench BUNDLE --lut FILE`): --cap then bounds "
         "measured latency, selection net included, instead of GFLOPs.")
_ORT_LAYOUT_OPTION = click.option(
    "--ort-layout", "ort_layout", type=click.Choice(list(_backends.ORT_LAYOUTS)), default="auto", show_default=True,
    help="ONNX Runtime only: 'auto' runs the layout the export measured best within the memory budget; "
         "'graph' the one graph (memory about Upper's); 'segments' the segment files chained; 'configs' a flat "
         "graph per configuration (both: degraded configurations as fast as per-configuration graphs on CPU, "
         "for private copies of the 2D weights; docs/shared-weights.md).")


@main.command("run")
@click.argument("bundle", type=click.Path(exists=True), required=False)
@click.option("--source", "-s", "sources", multiple=True,
              help="Camera index, video file, rtsp:// or http(s):// URL, or GStreamer pipeline. Repeatable.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Multi-camera YAML (runtime/README.md): bundle, sources with their own options, sinks; "
                   "options given here win over it.")
@click.option("--backend", type=click.Choice(_backends.backend_kinds(runs_bundle=True)), default="ort",
              show_default=True, help="Backends that run from a bundle alone (the backend table).")
@click.option("--device", type=click.Choice(_backends.device_choices(_backends.backend_kinds(runs_bundle=True))),
              default=None, help="Default: the backend's (ort: cpu, trt: cuda).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Greedy policy threshold (default: the bundle's).")
@_CAP_OPTION
@_CAP_LUT_OPTION
@click.option("--hop", type=click.IntRange(1), default=None, help="Sampled frames between windows (default: T).")
@click.option("--max-batch", type=click.IntRange(1), default=4, show_default=True)
@click.option("--queue", "queue_size", type=click.IntRange(1), default=4, show_default=True,
              help="Windows queued per source before the oldest is dropped.")
@click.option("--jsonl", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write JSON lines to FILE ('-' = stdout).")
@click.option("--overlay", type=click.Path(dir_okay=False), default=None,
              help="Write annotated video (OUT_<i>.mp4 per source when several).")
@click.option("--show", is_flag=True, help="Display the annotated frames (needs a display).")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--max-windows", type=click.IntRange(1), default=None, help="Stop after N windows.")
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), default=None, help="Stop after S seconds.")
@click.option("--max-reconnects", type=click.IntRange(0), default=None,
              help="A live source that delivered frames and then dropped: consecutive failed reopens "
                   "before giving up (default: reopen forever, with backoff).")
@click.option("--open-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds one open of a network source may take.")
@click.option("--open-attempts", type=click.IntRange(1), default=3, show_default=True,
              help="Tries to open a live source that has not delivered a frame yet before it fails.")
@click.option("--realtime/--no-realtime", default=None,
              help="Drop the oldest windows when inference falls behind (default: live sources yes, files no).")
@click.option("--threads", type=click.IntRange(1), default=_backends.ORT_RUN_THREADS, show_default=True,
              help="ONNX Runtime intra-op threads (benchmarks/results/run_threads.md).")
@click.option("--spin/--no-spin", "spinning", default=_backends.ORT_RUN_SPINNING, show_default=True,
              help="Let ONNX Runtime's idle intra-op threads spin (costs p95 latency under load).")
@_ORT_LAYOUT_OPTION
def run_cmd(bundle, sources: tuple[str, ...], config_path, **params) -> None:
    """Classify streams from one or more sources with the bundle; prints a summary at the end.

    Exits 1 when a source ended in error or no window was processed (the summary says which and why).
    """
    from click.core import ParameterSource

    from .runtime.app import run_failure, run_streams
    from .runtime.backends.base import USER_ERRORS
    from .runtime.config import load_run_config, resolve_run
    from .runtime.sources import SourceError

    ctx = click.get_current_context()
    given = {k for k in params if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        config = load_run_config(config_path) if config_path else None
        bundle, entries, options = resolve_run(bundle, list(sources), params, given, config)
        summary = run_streams(bundle, entries, options)
    except SourceError as e:
        raise click.BadParameter(str(e), param_hint="--source") from e
    except USER_ERRORS as e:  # bundle, option or machine: one line; anything else is a bug (traceback)
        raise click.ClickException(str(e)) from None
    failure = run_failure(summary)
    if failure:
        raise click.ClickException(failure)


# --- bench / demo ------------------------------------------------------------------------------

def _items(value: str, example: str, param) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if any(not v for v in items):
        raise click.BadParameter(f"empty item in {value!r}; give comma-separated values like {example}", param=param)
    return items


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if not value:
        return None
    items = _items(value, "1,4,8", param)
    try:
        return [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,4,8, got {value!r}") from None


def _str_list(ctx, param, value: str | None) -> list[str] | None:
    return _items(value, "11,00", param) if value else None


def _command_line(ctx: click.Context) -> str:
    """The command as typed, rebuilt from the parsed parameters (non-default options only)."""
    import shlex

    words = [ctx.command_path]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            words.append(shlex.quote(str(value)))
        elif value is not None and value is not False and value != p.default:
            flag = max(p.opts, key=len)
            if isinstance(value, bool):
                words.append(flag)
            else:
                text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
                words += [flag, shlex.quote(text)]
    return " ".join(words)


@main.command("bench")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--backend", type=click.Choice(_backends.backend_kinds()), default="ort", show_default=True,
              help="torch needs --checkpoint (the bundle holds no PyTorch weights).")
@click.option("--device", type=click.Choice(_backends.device_choices()), default=None,
              help="Default: the backend's (ort: cpu, trt: cuda, torch: cpu).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint for --backend torch (the bundle holds no PyTorch weights).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="List file of videos for the end-to-end run (default: generated noise clips).")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None, help="Folder of --data's paths.")
@click.option("--clips", type=click.IntRange(1), default=None,
              help="Videos (centre clip each) from --data, spread over the list; generated clips: default 16.")
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True, help="Timed round-robin rounds.")
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True, help="Untimed rounds first.")
@click.option("--passes", type=click.IntRange(1), default=1, show_default=True,
              help="Passes over the clips for adaptive vs Upper end to end.")
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True, help="Larger batch besides 1.")
@_CAP_OPTION
@_CAP_LUT_OPTION
@click.option("--frames", callback=_int_list, default=None, help="T' subset, e.g. 1,4,8 (default: 1..T).")
@click.option("--masks", callback=_str_list, default=None, help="Stage masks subset, e.g. 11,00 (default: all).")
@click.option("--threads", type=click.IntRange(1), default=None, help="ORT intra-op (or torch) threads.")
@_ORT_LAYOUT_OPTION
@click.option("--no-memory", is_flag=True, help="Skip the memory probes (two subprocesses).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write latency vs GFLOPs PNG.")
@click.option("--lut", "lut_out", type=click.Path(dir_okay=False), default=None,
              help="Write the latency table of every (mask, T') normalised to Upper, for policy.cost=latency.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_cmd(bundle: str, backend: str, device, checkpoint, data, root, clips, repeats: int, warmup: int,
              passes: int, batch: int, cap, cap_lut, frames, masks, threads, ort_layout: str, no_memory: bool, json_out,
              plot_out, lut_out, quiet: bool) -> None:
    """Latency of every configuration and of adaptive inference against Upper, in one process."""
    from .runtime.backends import BACKENDS
    from .runtime.backends.base import USER_ERRORS
    from .runtime.bench import BenchOptions, run_bench
    from .runtime.bench_report import format_table, plot, write_json

    command = _command_line(click.get_current_context())
    if plot_out:  # before minutes of timing, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib: `pip install matplotlib` (or "
                                   "ada3d-edge[train,export]), or leave out --plot") from None
    if lut_out:
        import os

        from .latency_lut import is_lut_file

        if frames or masks:
            raise click.UsageError("--lut needs every mask at every T': leave out --frames and --masks")
        if os.path.exists(lut_out) and not is_lut_file(lut_out):
            raise click.UsageError(f"--lut {lut_out} exists and is not a latency table: choose another file")
    if ort_layout != "auto" and backend != "ort":
        raise click.UsageError(f"--ort-layout {ort_layout} is an option of --backend ort, not {backend}")
    runner = backend
    if BACKENDS[backend].file_kind == "module":  # PyTorch modules rebuilt from a checkpoint
        if not checkpoint:
            raise click.UsageError(f"--backend {backend} runs the PyTorch model: pass its checkpoint "
                                   "with --checkpoint CKPT")
        from .bench_torch import torch_backend_factory

        runner = torch_backend_factory(checkpoint, device, threads)
    elif ort_layout != "auto":
        import functools

        from .runtime.backends import make_backend

        runner = functools.partial(make_backend, "ort", device, intra_op_threads=threads, layout=ort_layout)
    try:
        options = BenchOptions(data=data, root=root, clips=clips, repeats=repeats, warmup=warmup, batch=batch,
                               frames=frames, masks=masks, passes=passes, cap=cap, cap_lut=cap_lut, memory=not no_memory,
                               progress=not quiet)
        result = run_bench(bundle, runner, options, device=device, threads=threads, command=command,
                           log=lambda msg: click.echo(msg, err=True))
    except USER_ERRORS as e:  # bundle, option or machine: one line; anything else is a bug (traceback)
        raise click.ClickException(str(e)) from None
    click.echo(format_table(result))
    if json_out:
        click.echo(f"wrote {write_json(result, json_out)}")
    if plot_out:
        click.echo(f"wrote {plot(result, plot_out)}")
    if lut_out:
        from .latency_lut import lut_from_bench, write_lut

        try:
            lut = lut_from_bench(result.to_json())
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"wrote {write_lut(lut, lut_out)} (latency of {len(lut.cost)} configurations, Upper = 1.0)")


@main.command("demo")
@click.option("--workdir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Every output goes here; finished steps are reused on a re-run.")
@click.option("--quick", is_flag=True, help="Toy sizes (< 3 min): the CI smoke test.")
@click.option("--recipe", default=None, type=click.Path(dir_okay=False),
              help="Training recipe (default: train/demo.yaml of the source tree).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(workdir: str, quick: bool, recipe, quiet: bool) -> None:
    """Synthesize data, train upper -> policy -> joint, evaluate, export, run on a stream, bench vs Upper."""
    from .extras import require

    for module in ("torch", "onnx", "matplotlib"):
        require(module, "train,export", "demo")
    from .demo import run_demo

    try:
        run_demo(workdir, quick=quick, recipe=recipe, progress=not quiet, echo=click.echo)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise click.UsageError(str(e)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
