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
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out: str, num_classes: int, videos_per_class: int, val_per_class: int, size: int,
          frames: int, fps: float, seed: int, overwrite: bool, quiet: bool) -> None:
    """Write a synthetic static/motion video dataset (mp4 + list files) to OUT."""
    from .data.synth import make_synth_dataset, synth_classes

    try:
        synth_classes(num_classes)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--classes'") from None
    try:
        info = make_synth_dataset(out, num_classes=num_classes, videos_per_class=videos_per_class,
                                  val_per_class=val_per_class, size=size, frames=frames, fps=fps,
                                  seed=seed, progress=not quiet, overwrite=overwrite)
    except (ValueError, FileExistsError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {info['num_train']} train + {info['num_val']} val videos of "
               f"{info['num_classes']} classes to {out} (lists: train.txt, val.txt, classes.txt)")


# --- training: train / eval --------------------------------------------------------------------
from .train.commands import COMMANDS as _TRAIN_COMMANDS  # noqa: E402  (click only; torch loads on use)

for _cmd in _TRAIN_COMMANDS:  # ada3d train | eval | sweep
    main.add_command(_cmd)


# --- export: export / build-engines ------------------------------------------------------------
@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), required=True, help="Bundle directory to write.")
@click.option("--opset", type=click.IntRange(17), default=17, show_default=True, help="ONNX opset.")
@click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check of every file.")
@click.option("--fold", "fold", type=click.Choice(["auto", "all", "degraded"]), default="auto", show_default=True,
              help="Which temporal-kernel-1 convs become Conv2d over folded frames: the 2D tail of each "
                   "configuration (auto), all of them, or only degraded stages (always folded).")
@click.option("--no-fold", is_flag=True, help="Same as --fold degraded.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(checkpoint: str, out: str, opset: int, no_verify: bool, fold: str, no_fold: bool,
               overwrite: bool, quiet: bool) -> None:
    """Export CHECKPOINT to a bundle: policy.onnx + one backbone ONNX per stage mask + manifest.json."""
    from .extras import require

    require("torch", "export", "export")
    require("onnx", "export", "export")
    from .export.exporter import export_bundle
    from .export.verify import VerificationError

    try:
        path = export_bundle(checkpoint, out, opset=opset, verify=not no_verify,
                             fold_frames="degraded" if no_fold else fold,
                             overwrite=overwrite, progress=not quiet)
    except FileExistsError as e:
        raise click.UsageError(str(e)) from None
    except (ValueError, VerificationError) as e:
        raise click.ClickException(str(e)) from None
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
@main.command("run")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--source", "-s", "sources", multiple=True, required=True,
              help="Camera index, video file, rtsp:// or http(s):// URL, or GStreamer pipeline. Repeatable.")
@click.option("--backend", type=click.Choice(["ort", "trt", "torch"]), default="ort", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: the backend's.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Greedy policy threshold (default: the bundle's).")
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
              help="Consecutive failed reopens of a live source before giving up (default: never).")
@click.option("--realtime/--no-realtime", default=None,
              help="Drop the oldest windows when inference falls behind (default: live sources yes, files no).")
def run_cmd(bundle: str, sources: tuple[str, ...], backend: str, device, threshold, hop, max_batch: int,
            queue_size: int, jsonl, overlay, show: bool, topk: int, max_windows, duration, max_reconnects,
            realtime) -> None:
    """Classify streams from one or more sources with the bundle; prints a summary at the end."""
    from .runtime.app import run_streams
    from .runtime.sources import SourceError

    try:
        run_streams(bundle, list(sources), backend=backend, device=device, threshold=threshold, hop=hop,
                    max_batch=max_batch, queue_size=queue_size, jsonl=jsonl, overlay=overlay, show=show,
                    topk=topk, max_windows=max_windows, duration=duration, max_reconnects=max_reconnects,
                    realtime=realtime)
    except SourceError as e:
        raise click.BadParameter(str(e), param_hint="--source") from e


# --- bench / demo ------------------------------------------------------------------------------

def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,4,8, got {value!r}") from None


def _str_list(ctx, param, value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


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
@click.option("--backend", type=click.Choice(["ort", "trt", "torch"]), default="ort", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: the backend's.")
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
@click.option("--frames", callback=_int_list, default=None, help="T' subset, e.g. 1,4,8 (default: 1..T).")
@click.option("--masks", callback=_str_list, default=None, help="Stage masks subset, e.g. 11,00 (default: all).")
@click.option("--threads", type=click.IntRange(1), default=None, help="ORT intra-op (or torch) threads.")
@click.option("--no-memory", is_flag=True, help="Skip the memory probes (two subprocesses).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write latency vs GFLOPs PNG.")
def bench_cmd(bundle: str, backend: str, device, checkpoint, data, root, clips, repeats: int, warmup: int,
              passes: int, batch: int, frames, masks, threads, no_memory: bool, json_out, plot_out) -> None:
    """Latency of every configuration and of adaptive inference against Upper, in one process."""
    from .bundle import BundleError
    from .runtime.bench import run_bench
    from .runtime.bench_report import format_table, plot, write_json

    command = _command_line(click.get_current_context())
    try:
        result = run_bench(bundle, backend, device, data=data, root=root, clips=clips, repeats=repeats,
                           warmup=warmup, batch=batch, frames=frames, masks=masks, threads=threads, passes=passes,
                           checkpoint=checkpoint, memory=not no_memory, command=command,
                           log=lambda msg: click.echo(msg, err=True))
    except (ValueError, BundleError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(format_table(result))
    if json_out:
        click.echo(f"wrote {write_json(result, json_out)}")
    if plot_out:
        click.echo(f"wrote {plot(result, plot_out)}")


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
