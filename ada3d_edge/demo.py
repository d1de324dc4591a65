"""`ada3d demo`: the whole product on this CPU, in one work directory.

synthetic data -> train upper -> policy -> joint -> evaluate (Table 1 rows) -> export + verify the
bundle -> run the runtime on the bundle over a loopback stream -> latency against Upper.
Every step writes into `workdir` and is skipped when its output is already there, so a re-run
(or a run after an interruption) continues where it stopped; training resumes from `last.pt`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .train.stage_specs import PIPELINE

RECIPE = Path(__file__).resolve().parents[1] / "train" / "demo.yaml"
MARKER = ".ada3d-demo"  # written into a workdir the demo created; only such a folder is written over
OUTPUTS = {"data", "train", "bundle", "eval.json", "run.jsonl", "overlay.mp4", "run_summary.json",
           "bench.json", "bench.png", MARKER}


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run: the full CPU demo (< 25 min) or the `--quick` smoke test (< 3 min)."""

    videos_per_class: int
    val_per_class: int
    size: int
    frames: int
    recipe_overrides: List[str] = field(default_factory=list)
    eval_clips: int = 3
    stream_windows: int = 12
    bench_repeats: int = 10
    bench_clips: int = 24


FULL = DemoPlan(videos_per_class=200, val_per_class=25, size=64, frames=40, bench_clips=200)  # all val clips
QUICK = DemoPlan(videos_per_class=3, val_per_class=2, size=32, frames=24, eval_clips=1, stream_windows=3,
                 bench_repeats=2, bench_clips=4, recipe_overrides=[
                     "optim.epochs=1", "policy.epochs=1", "joint.epochs=1", "data.crop=32",
                     "data.test_crop=32", "data.short_side_range=[32,36]", "data.stride=2",
                     "data.num_clips=1", "data.val_every=0", "model.backbone.widths=[8,16,32,64]",
                     "optim.batch_size=8", "policy.batch_size=8", "joint.batch_size=8"])


class _Steps:
    """Prints numbered step headers with elapsed time."""

    def __init__(self, echo: Callable[[str], None], total: int):
        self.echo, self.total, self.n, self.t0 = echo, total, 0, time.time()

    def start(self, title: str) -> None:
        self.n += 1
        self.echo(f"\n[{self.n}/{self.total}] {title}  (elapsed {time.time() - self.t0:.0f} s)")

    def skip(self, what: Path) -> None:
        self.echo(f"  reusing {what}")


def _synth(plan: DemoPlan, data: Path, steps: _Steps, progress: bool) -> None:
    from .data.synth import make_synth_dataset

    steps.start("synthetic dataset (static and motion classes, mp4)")
    if (data / "dataset.json").is_file():
        return steps.skip(data)
    make_synth_dataset(data, videos_per_class=plan.videos_per_class, val_per_class=plan.val_per_class,
                       size=plan.size, frames=plan.frames, seed=0, progress=progress, overwrite=True)


def _train(plan: DemoPlan, recipe_path: Path, data: Path, train_dir: Path, steps: _Steps, progress: bool) -> Path:
    from .train.config import load_recipe
    from .train.trainer import train_stage

    overrides = [f"data.root={data}", f"output_dir={train_dir}", *plan.recipe_overrides]
    recipe = load_recipe(recipe_path, overrides)
    times = train_dir / "times_train.txt"  # "stage seconds" lines, read by benchmarks/train_demo.sh
    for stage in PIPELINE:  # upper -> policy -> joint
        steps.start(f"train {stage}")
        final = train_dir / stage / "final.pt"
        if final.is_file():
            steps.skip(final)
            continue
        t0 = time.time()
        resume = (train_dir / stage / "last.pt").is_file()  # the workdir is the demo's own (MARKER)
        train_stage(recipe, stage, resume=resume, overwrite=not resume, progress=progress)
        with times.open("a") as f:
            f.write(f"{stage} {time.time() - t0:.0f}\n")
    return train_dir / "joint" / "final.pt"


def _evaluate(plan: DemoPlan, ckpt: Path, data: Path, out: Path, steps: _Steps, progress: bool,
              echo: Callable[[str], None]) -> Dict[str, Any]:
    from .train.evaluate import evaluate, format_table

    steps.start("evaluate on val: Upper (stage-0 model), Random, Ada3D (Table 1 rows)")
    if out.is_file() and out.stat().st_mtime >= ckpt.stat().st_mtime:
        steps.skip(out)
        result = json.loads(out.read_text())
    else:
        result = evaluate(ckpt, data / "val.txt", root=data, classes_file=data / "classes.txt",
                          num_clips=plan.eval_clips, upper=ckpt.parent.parent / "upper" / "final.pt",
                          progress=progress)
        out.write_text(json.dumps(result, indent=2))
    echo(format_table(result))
    return result


def _export(ckpt: Path, bundle: Path, steps: _Steps, progress: bool) -> Path:
    from .bundle import BundleError, open_bundle
    from .export.exporter import export_bundle

    steps.start("export the bundle (ONNX per configuration, verified against PyTorch)")
    if (bundle / "manifest.json").is_file():
        try:
            open_bundle(bundle)
            if bundle.stat().st_mtime >= ckpt.stat().st_mtime:
                steps.skip(bundle)
                return bundle
        except BundleError:
            pass
    return export_bundle(ckpt, bundle, overwrite=True, progress=progress, fold_frames="measure")


def _stream(plan: DemoPlan, bundle: Path, data: Path, work: Path, steps: _Steps,
            echo: Callable[[str], None]) -> Dict[str, Any]:
    from .runtime.app import RunOptions, run_streams
    from .runtime.sources import SourceOptions
    from .testing.loopback import FFMPEG, free_port, start_http_server, stop_process, wait_port

    steps.start("run the runtime on a stream")
    first_val = (data / "val.txt").read_text().split()[0]
    clip = data / first_val
    server, source = None, str(clip)
    if FFMPEG:
        port = free_port()
        server = start_http_server(clip, port)
        if wait_port(port):
            source = f"http://127.0.0.1:{port}/live.ts"
        else:
            stop_process(server)
            server = None
    echo(f"  source: {source}" + ("" if server else "  (ffmpeg absent: read as a file)"))
    try:
        summary = run_streams(str(bundle), [source], RunOptions(
            jsonl=str(work / "run.jsonl"), overlay=str(work / "overlay.mp4"), max_windows=plan.stream_windows,
            duration=120.0, source=SourceOptions(max_reconnects=3))).to_json()
    finally:
        stop_process(server)
    (work / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _bench(plan: DemoPlan, bundle: Path, data: Path, work: Path, steps: _Steps,
           echo: Callable[[str], None]) -> Dict[str, Any]:
    from .runtime.bench import BenchOptions, run_bench
    from .runtime.bench_report import format_table, plot, write_json

    steps.start("latency against Upper (ONNX Runtime, this CPU)")
    out = work / "bench.json"
    if out.is_file() and out.stat().st_mtime >= (bundle / "manifest.json").stat().st_mtime:
        steps.skip(out)
        result = json.loads(out.read_text())
    else:
        result = run_bench(bundle, "ort", BenchOptions(data=str(data / "val.txt"), root=str(data),
                                                       clips=plan.bench_clips, repeats=plan.bench_repeats, warmup=2),
                           command=f"ada3d demo --workdir {work}" + (" --quick" if plan is QUICK else ""),
                           log=lambda msg: echo(f"  {msg}")).to_json()
        write_json(result, out)
        plot(result, work / "bench.png")
    echo(format_table(result))
    return result


def claim_workdir(work: Path) -> None:
    """Create `work` for the demo, or accept it when an earlier demo made it; refuse any other folder
    that is not empty (the demo writes over its own outputs there)."""
    if work.exists() and not work.is_dir():
        raise FileExistsError(f"--workdir {work} is a file; pass a new or empty folder")
    if work.is_dir() and not (work / MARKER).is_file():
        names = {p.name for p in work.iterdir()}
        earlier_demo = names <= OUTPUTS and (work / "data" / "dataset.json").is_file()  # made before MARKER
        if names and not earlier_demo:
            raise FileExistsError(f"--workdir {work} is not empty and was not made by `ada3d demo` "
                                  f"(no {MARKER} in it); pass a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).touch()


def run_demo(workdir: str | Path = "runs/demo", quick: bool = False, recipe: Optional[str | Path] = None,
             progress: bool = True, echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run every step of the demo in `workdir`; returns the paths of what it wrote."""
    plan = QUICK if quick else FULL
    recipe_path = Path(recipe) if recipe else RECIPE
    if not recipe_path.is_file():
        raise FileNotFoundError(f"demo recipe {recipe_path} not found; it ships in the source tree "
                                "(train/demo.yaml): run from a clone, or pass --recipe PATH")
    work = Path(workdir).resolve()
    claim_workdir(work)
    data, bundle = work / "data", work / "bundle"
    steps = _Steps(echo, total=1 + len(PIPELINE) + 4)
    echo(f"ada3d demo{' --quick' if quick else ''}: everything goes to {work}")
    _synth(plan, data, steps, progress)
    ckpt = _train(plan, recipe_path, data, work / "train", steps, progress)
    evaluation = _evaluate(plan, ckpt, data, work / "eval.json", steps, progress, echo)
    _export(ckpt, bundle, steps, progress)
    summary = _stream(plan, bundle, data, work, steps, echo)
    bench = _bench(plan, bundle, data, work, steps, echo)
    outputs = {"workdir": work, "data": data, "checkpoint": ckpt, "eval": work / "eval.json",
               "bundle": bundle, "stream_jsonl": work / "run.jsonl", "overlay": work / "overlay.mp4",
               "bench": work / "bench.json", "bench_plot": work / "bench.png"}
    echo(f"\ndone in {time.time() - steps.t0:.0f} s; stream: {summary.get('windows', 0)} windows. Outputs in {work}:")
    for name, path in outputs.items():
        echo(f"  {name:13s} {path}")
    echo("\n" + demo_line(evaluation, bench))
    return outputs


def demo_line(evaluation: Dict[str, Any], bench: Dict[str, Any]) -> str:
    """The demo's result in one line: accuracy and GFLOPs (eval), latency end to end (bench)."""
    rows = {r["method"]: r for r in evaluation["rows"]}
    ada, up = rows["Ada3D"], rows["Upper"]
    a, u = bench["adaptive"], bench["upper"]
    am, um = a["latency_ms"], u["latency_ms"]
    return (f"demo: Ada3D {ada['metric']:.1f}% top-1 vs Upper {up['metric']:.1f}% at "
            f"{100 * (1 - ada['gflops'] / up['gflops']):.1f}% fewer GFLOPs (selection net included); "
            f"end to end on {bench['clips']}: adaptive {am['mean']:.2f} ms mean / {am['p95']:.2f} p95 vs Upper "
            f"{um['mean']:.2f} / {um['p95']:.2f} ms ({am['mean'] / um['mean']:.2f}x); selection net "
            f"{100 * bench['policy']['fraction_of_upper']:.0f}% of Upper's engine")
