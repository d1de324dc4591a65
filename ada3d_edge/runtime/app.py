"""``ada3d run``: classify camera / file / network streams with an Ada3D bundle.

Open the bundle, open every source by URI, let one scheduler batch the windows through the adaptive
predictor, write the results to the sinks, print a summary. Stops on Ctrl-C, when every file has
ended, or after ``max_windows`` / ``duration``.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Sequence

from .scheduler import Scheduler, format_summary, stop_on_signals
from .sinks import ConsoleSink, DisplaySink, JsonlSink, OverlayVideoSink, Sink, check_overlay_path
from .sources import SourceReader, check_source, parse_source, quiet_video_logs


def run_failure(summary: dict) -> str | None:
    """Why a finished run counts as failed (a source ended in error, or no window), else None."""
    failed = [s for s in summary["sources"] if s["status"] == "error"]
    if failed:
        return (f"{len(failed)} of {len(summary['sources'])} source(s) ended in error: "
                + "; ".join(f"{s['name']}: {s['error']}" for s in failed))
    if summary["windows"] == 0:
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


def make_sinks(num_sources: int, *, jsonl: str | os.PathLike | None = None,
               overlay: str | os.PathLike | None = None, show: bool = False, topk: int = 5) -> list[Sink]:
    """The sinks asked for; console lines when none is (``--show`` without a display only warns)."""
    sinks: list[Sink] = []
    if jsonl is not None:
        sinks.append(JsonlSink(jsonl, topk=topk))
    if overlay is not None:
        sinks.append(OverlayVideoSink(overlay, num_sources))
    if show:
        try:
            sinks.append(DisplaySink())
        except RuntimeError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    if not sinks:
        sinks.append(ConsoleSink(sys.stdout))
    return sinks


def run_streams(bundle_path: str | os.PathLike | None, sources: Sequence[str | int], *,
                backend: str = "ort", device: str | None = None, threshold: float | None = None,
                hop: int | None = None, max_batch: int = 4, queue_size: int = 4,
                jsonl: str | os.PathLike | None = None, overlay: str | os.PathLike | None = None,
                show: bool = False, topk: int = 5, max_windows: int | None = None,
                duration: float | None = None, max_reconnects: int | None = None,
                source_options: dict[str, Any] | None = None, predictor: Any = None,
                stop_event: threading.Event | None = None, realtime: bool | None = None,
                threads: int | None = None, spinning: bool | None = None) -> dict:
    """Run the bundle on every source; returns (and prints) the summary dict.

    ``hop`` is in sampled frames (default: T, back-to-back windows). ``source_options`` go to every
    ``SourceReader`` (``reconnect_backoff``, ``resize``, ``max_frames``, ``open_timeout_s``,
    ``read_timeout_s``). ``predictor`` replaces the one built from ``bundle_path`` (tests, embedding);
    it needs ``predict_batch`` and ``num_frames``/``stride`` (directly or on ``.manifest``).
    Setting ``stop_event`` from another thread ends the run like Ctrl-C does. ``realtime`` (default:
    live sources yes, files no) drops the oldest window when inference falls behind; otherwise the
    reader waits. ``threads``/``spinning`` set ONNX Runtime's intra-op pool (ort backend only).
    """
    if not sources:
        raise ValueError("no source given; pass --source SRC (camera index, file, URL or pipeline)")
    quiet_video_logs()
    specs = [parse_source(src, i) for i, src in enumerate(sources)]
    for spec in specs:  # fail before loading any engine on what can never open
        check_source(spec)
    if overlay is not None:
        check_overlay_path(overlay)
    owned = predictor is None
    if owned:
        from .predictor import AdaptivePredictor

        options = ({"intra_op_threads": threads, "allow_spinning": spinning} if backend == "ort" else {})
        predictor = AdaptivePredictor(bundle_path, backend=backend, device=device,
                                      threshold=threshold, max_batch=max_batch, **options)
    geometry = getattr(predictor, "manifest", predictor)
    num_frames, stride = int(geometry.num_frames), int(geometry.stride)

    sinks = make_sinks(len(specs), jsonl=jsonl, overlay=overlay, show=show, topk=topk)
    stop, notify = stop_event or threading.Event(), threading.Event()
    overlay_sink = next((s for s in sinks if isinstance(s, OverlayVideoSink)), None)
    readers = [SourceReader(spec, num_frames=num_frames, stride=stride, hop=hop,
                            queue_size=queue_size, notify=notify, max_reconnects=max_reconnects,
                            realtime=realtime, frame_sink=overlay_sink and overlay_sink.write_frame,
                            **(source_options or {}))
               for spec in specs]
    scheduler = Scheduler(predictor, readers, sinks, max_batch=max_batch, max_windows=max_windows,
                          duration=duration, stop_event=stop, notify=notify)
    try:
        with stop_on_signals(stop):
            summary = scheduler.run()
    finally:
        for sink in sinks:
            sink.close()
        if owned:
            predictor.close()
    summary["outputs"] = output_paths(sinks)
    print(format_summary(summary), file=sys.stderr if str(jsonl) == "-" else sys.stdout, flush=True)
    return summary
