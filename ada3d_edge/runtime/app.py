"""``ada3d run``: classify camera / file / network streams with an Ada3D bundle.

Open the bundle, open every source by URI, let one scheduler batch the windows through the adaptive
predictor, write the results to the sinks, print a summary. Stops on Ctrl-C, when every file has
ended, or after ``max_windows`` / ``duration``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from .scheduler import RunSummary, Scheduler, format_summary, stop_on_signals
from .sinks import ConsoleSink, DisplaySink, JsonlSink, OverlayVideoSink, Sink, check_overlay_path
from .sources import SourceOptions, SourceReader, check_source, parse_source, quiet_video_logs


@dataclass(frozen=True)
class RunOptions:
    """How `run_streams` runs: backend, batching, sinks, stop conditions, and every source's options.

    ``hop`` is in sampled frames (None: T, back-to-back windows). ``threads``/``spinning`` set
    ONNX Runtime's intra-op pool (ort only; None: its defaults); ``ort_layout`` which backbone
    files it runs (``backends.ort.ORT_LAYOUTS``). ``source`` applies to every source
    that does not bring options of its own (``StreamSource``).
    """

    backend: str = "ort"
    device: str | None = None
    threshold: float | None = None
    cap: float | None = None  # the predictor's frame cap (x Upper's GFLOPs a clip; None: off)
    cap_lut: str | None = None  # a latency table for it (`ada3d bench --lut`): bound measured latency
    threads: int | None = None
    spinning: bool | None = None
    ort_layout: str = "auto"
    hop: int | None = None
    max_batch: int = 4
    queue_size: int = 4
    jsonl: str | os.PathLike | None = None
    overlay: str | os.PathLike | None = None
    show: bool = False
    topk: int = 5
    max_windows: int | None = None
    duration: float | None = None
    source: SourceOptions = field(default_factory=SourceOptions)


@dataclass(frozen=True)
class StreamSource:
    """A SRC with options of its own (a config file's per-source settings)."""

    src: str | int
    options: SourceOptions | None = None


SourceLike = Union[str, int, StreamSource]


def run_failure(summary: RunSummary) -> str | None:
    """Why a finished run counts as failed (a source ended in error, or no window), else None."""
    failed = [s for s in summary.sources if s.status == "error"]
    if failed:
        return (f"{len(failed)} of {len(summary.sources)} source(s) ended in error: "
                + "; ".join(f"{s.name}: {s.error}" for s in failed))
    if summary.windows == 0:
        return ("no window was processed (a source must deliver T sampled frames for one window); "
                "check the sources, or raise --duration")
    return None


def output_paths(sinks: Sequence[Sink]) -> list[str]:
    """The files the sinks wrote (JSON lines, one overlay video per source)."""
    out = []
    for sink in sinks:
        if isinstance(sink, JsonlSink) and str(sink.path) != "-":
            out.append(str(sink.path))
        if isinstance(sink, OverlayVideoSink):
            out += [f"{p} ({sink.frames_written.get(i, 0)} frames)" for i, p in sorted(sink.paths.items())]
    return out


def make_sinks(num_sources: int, options: RunOptions) -> list[Sink]:
    """The sinks asked for; console lines when none is (``--show`` without a display only warns)."""
    sinks: list[Sink] = []
    if options.jsonl is not None:
        sinks.append(JsonlSink(options.jsonl, topk=options.topk))
    if options.overlay is not None:
        sinks.append(OverlayVideoSink(options.overlay, num_sources))
    if options.show:
        try:
            sinks.append(DisplaySink())
        except RuntimeError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    if not sinks:
        sinks.append(ConsoleSink(sys.stdout))
    return sinks


def run_streams(bundle_path: str | os.PathLike | None, sources: Sequence[SourceLike],
                options: RunOptions = RunOptions(), *, predictor: Any = None,
                stop_event: threading.Event | None = None) -> RunSummary:
    """Run the bundle on every source; returns (and prints) the summary.

    ``predictor`` replaces the one built from ``bundle_path`` (tests, embedding); it needs
    ``predict_batch`` and ``num_frames``/``stride`` (directly or on ``.manifest``). Setting
    ``stop_event`` from another thread ends the run like Ctrl-C does.
    """
    o = options
    if not sources:
        raise ValueError("no source given; pass --source SRC (camera index, file, URL or pipeline)")
    quiet_video_logs()
    entries = [s if isinstance(s, StreamSource) else StreamSource(s) for s in sources]
    specs = [parse_source(e.src, i) for i, e in enumerate(entries)]
    for spec in specs:  # fail before loading any engine on what can never open
        check_source(spec)
    if o.overlay is not None:
        check_overlay_path(o.overlay)
    owned = predictor is None
    if o.cap_lut and o.cap is None:
        raise ValueError("cap_lut is the latency table of the frame cap: give cap (--cap) too")
    if o.ort_layout != "auto" and o.backend != "ort":
        raise ValueError(f"ort_layout {o.ort_layout!r} is an option of the ort backend, not {o.backend!r}")
    if owned:
        from .predictor import AdaptivePredictor

        pool = ({"intra_op_threads": o.threads, "allow_spinning": o.spinning, "layout": o.ort_layout}
                if o.backend == "ort" else {})
        predictor = AdaptivePredictor(bundle_path, backend=o.backend, device=o.device,
                                      threshold=o.threshold, max_batch=o.max_batch, cap=o.cap,
                                      cap_lut=o.cap_lut, **pool)
    geometry = getattr(predictor, "manifest", predictor)
    num_frames, stride = int(geometry.num_frames), int(geometry.stride)

    sinks = make_sinks(len(specs), o)
    stop, notify = stop_event or threading.Event(), threading.Event()
    overlay_sink = next((s for s in sinks if isinstance(s, OverlayVideoSink)), None)
    readers = [SourceReader(spec, num_frames=num_frames, stride=stride, hop=o.hop, queue_size=o.queue_size,
                            notify=notify, frame_sink=overlay_sink and overlay_sink.write_frame,
                            **dataclasses.asdict(entry.options or o.source))
               for spec, entry in zip(specs, entries)]
    scheduler = Scheduler(predictor, readers, sinks, max_batch=o.max_batch, max_windows=o.max_windows,
                          duration=o.duration, stop_event=stop, notify=notify)
    try:
        with stop_on_signals(stop):
            summary = scheduler.run()
    finally:
        for sink in sinks:
            sink.close()
        if owned:
            predictor.close()
    summary.outputs = output_paths(sinks)
    print(format_summary(summary), file=sys.stderr if str(o.jsonl) == "-" else sys.stdout, flush=True)
    return summary
