"""One scheduler owns the predictor: it pulls windows from every source, batches, and feeds the sinks.

The loop ends on SIGINT/SIGTERM (a handler sets an Event), when every source has ended, after
``max_windows`` results or ``duration`` seconds, or when a sink asks to stop. ``run`` returns a
``RunSummary`` (windows, drops and reconnects per source, latency p50/p95, configuration histogram,
``to_json``); ``format_summary`` renders it as a small aligned table.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .feature_cache import FeatureCache, StreamFrames
from .sinks import Sink
from .sources import EndOfStream, SourceReader, Window
from .stats import LatencyStats, latency_stats


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
                    ) -> Iterator[None]:
    """First SIGINT/SIGTERM sets ``stop`` (clean shutdown); a second one raises KeyboardInterrupt.

    Outside the main thread signals cannot be handled, so this does nothing there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signal_name = signal.Signals(signum).name  # type: ignore[attr-defined]
        stop.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@dataclass(frozen=True)
class SourceSummary:
    """One source at the end of a run."""

    name: str
    kind: str
    frames: int
    windows: int
    processed: int
    dropped: int
    pending: int
    reconnects: int
    reconnect_attempts: int
    status: str  # ended, error, running (a reader that did not stop in time)
    error: str | None


@dataclass
class RunSummary:
    """What a run ends with; ``to_json`` gives the plain dict (latencies rounded to 3 digits)."""

    windows: int
    elapsed_s: float
    windows_per_s: float
    stop_reason: str
    dropped: int
    reconnects: int
    latency_ms: LatencyStats | None
    batch_ms: LatencyStats | None
    mean_batch: float
    gflops_mean: float | None
    configurations: dict[str, int]
    sources: list[SourceSummary]
    outputs: list[str] = field(default_factory=list)
    # selection-network frames computed / reused from the per-source feature caches (None: no cache)
    policy_frames: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("latency_ms", "batch_ms"):
            stats = getattr(self, key)
            out[key] = stats.to_json(digits=3) if stats else {"p50": None, "p95": None, "mean": None}
        return out


class Scheduler:
    """Pulls windows round-robin from the readers' queues and runs them through ``predictor``.

    Args:
        predictor: has ``predict_batch(list of (T, H, W, 3) uint8) -> list[Prediction]``.
        readers: not yet started; the scheduler starts, stops and joins them.
        sinks: each gets ``write(window, prediction, latency_ms)`` per result.
        max_batch: windows per ``predict_batch`` call (the predictor groups them by engine).
        notify: the Event the readers' queues set on every put (else the loop polls).
    """

    def __init__(self, predictor: Any, readers: Sequence[SourceReader], sinks: Sequence[Sink], *,
                 max_batch: int = 4, max_windows: int | None = None, duration: float | None = None,
                 stop_event: threading.Event | None = None, notify: threading.Event | None = None,
                 poll_s: float = 0.05, join_timeout_s: float = 3.0) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.predictor, self.readers, self.sinks = predictor, list(readers), list(sinks)
        self.max_batch, self.max_windows, self.duration = max_batch, max_windows, duration
        self.stop_event = stop_event or threading.Event()
        self.notify = notify or threading.Event()
        self.poll_s, self.join_timeout_s = poll_s, join_timeout_s
        self._ended: dict[int, EndOfStream] = {}
        self._next = 0
        self.latencies: list[float] = []
        self.batch_ms: list[float] = []
        self.batch_sizes: list[int] = []
        self.gflops: list[float] = []
        self.configs: Counter[str] = Counter()
        self.processed: Counter[int] = Counter()
        # one feature cache per source when the predictor reuses frame features (the split policy)
        self.caches: dict[int, FeatureCache] | None = {} if getattr(predictor, "caches_features", False) else None

    def _collect(self, limit: int) -> list[Window]:
        """Up to ``limit`` windows, taking one per source in turn so no source starves."""
        batch: list[Window] = []
        n = len(self.readers)
        while len(batch) < limit:
            took = False
            for k in range(n):
                i = (self._next + k) % n
                item = self.readers[i].queue.get_nowait()
                if item is None:
                    continue
                took = True
                if isinstance(item, EndOfStream):
                    self._ended[i] = item
                else:
                    batch.append(item)
                    if len(batch) >= limit:
                        self._next = (i + 1) % n
                        return batch
            if not took:
                break
        return batch

    def _stop_reason(self, started: float) -> str | None:
        if self.stop_event.is_set():
            return getattr(self.stop_event, "signal_name", "stopped")
        if self.duration is not None and time.perf_counter() - started >= self.duration:
            return "duration"
        if self.max_windows is not None and sum(self.processed.values()) >= self.max_windows:
            return "max_windows"
        if any(getattr(s, "stop_requested", False) for s in self.sinks):
            return "user"
        return None

    def _dispatch(self, batch: list[Window]) -> None:
        t0 = time.perf_counter()
        if self.caches is None:
            predictions = self.predictor.predict_batch([w.frames for w in batch])
        else:
            predictions = self.predictor.predict_batch([w.frames for w in batch], self._streams(batch))
        done = time.perf_counter()
        self.batch_ms.append((done - t0) * 1000)
        self.batch_sizes.append(len(batch))
        for window, pred in zip(batch, predictions):
            latency_ms = (done - window.emitted_at) * 1000
            self.latencies.append(latency_ms)
            self.gflops.append(float(getattr(pred, "gflops", 0.0) or 0.0))
            self.configs[f"{pred.stage_mask} T'={int(pred.num_frames_kept)}"] += 1
            self.processed[window.source_index] += 1
            for sink in self.sinks:
                sink.write(window, pred, latency_ms)

    def _streams(self, batch: list[Window]) -> list[StreamFrames | None]:
        """Each window's source cache and frame ids; frames older than a window are forgotten.

        Windows of one source arrive oldest first, so once a window is taken, no later one holds
        frames before its first; a window from a new buffer generation (reconnect) empties the cache.
        """
        streams: list[StreamFrames | None] = []
        oldest: dict[int, int] = {}
        for w in batch:
            if len(w.frame_ids) != len(w.frames):
                streams.append(None)  # a window built without ids: computed in full
                continue
            cache = self.caches.setdefault(w.source_index, FeatureCache())
            cache.sync(w.generation)
            oldest.setdefault(w.source_index, w.frame_ids[0])  # the source's first window in the batch
            streams.append(StreamFrames(cache, w.frame_ids))
        for index, first_id in oldest.items():
            self.caches[index].forget_before(first_id)
        return streams

    def run(self) -> dict:
        """Run until a stop condition; always stops and joins the readers; returns the summary."""
        started = time.perf_counter()
        reason = "sources_ended"
        for reader in self.readers:
            reader.start()
        try:
            while True:
                reason = self._stop_reason(started) or ""
                if reason:
                    break
                limit = self.max_batch
                if self.max_windows is not None:
                    limit = min(limit, self.max_windows - sum(self.processed.values()))
                self.notify.clear()
                batch = self._collect(limit)
                if batch:
                    self._dispatch(batch)
                elif len(self._ended) == len(self.readers):
                    reason = "sources_ended"
                    break
                else:
                    self.notify.wait(self.poll_s)
        finally:
            for reader in self.readers:
                reader.stop()
            deadline = time.monotonic() + self.join_timeout_s
            for reader in self.readers:
                reader.join(timeout=max(0.0, deadline - time.monotonic()))
        return self.summary(reason, time.perf_counter() - started)

    def summary(self, reason: str, elapsed: float) -> RunSummary:
        """The numbers the run ends with (also what ``run`` returns)."""
        sources = [SourceSummary(name=r.spec.name, kind=r.spec.kind, frames=r.stats.frames,
                                 windows=r.stats.windows, processed=self.processed[i], dropped=r.queue.dropped,
                                 pending=r.queue.pending_windows(), reconnects=r.stats.reconnects,
                                 reconnect_attempts=r.stats.reconnect_attempts,
                                 status=r.stats.status if not r.is_alive() else "running", error=r.stats.error)
                   for i, r in enumerate(self.readers)]
        total = sum(self.processed.values())
        return RunSummary(
            windows=total, elapsed_s=round(elapsed, 3),
            windows_per_s=round(total / elapsed, 3) if elapsed > 0 else 0.0, stop_reason=reason,
            dropped=sum(s.dropped for s in sources), reconnects=sum(s.reconnects for s in sources),
            latency_ms=latency_stats(self.latencies), batch_ms=latency_stats(self.batch_ms),
            mean_batch=round(float(np.mean(self.batch_sizes)), 3) if self.batch_sizes else 0.0,
            gflops_mean=round(float(np.mean(self.gflops)), 4) if self.gflops else None,
            configurations=dict(self.configs.most_common()), sources=sources,
            policy_frames=None if self.caches is None else {
                "computed": sum(c.computed for c in self.caches.values()),
                "reused": sum(c.reused for c in self.caches.values())})


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def format_summary(summary: RunSummary) -> str:
    """A few aligned lines: totals, one row per source, its error if any, one row per configuration."""
    lat = summary.latency_ms
    fmt = (lambda v: "-" if v is None else f"{v:.1f}")
    lines = [f"ada3d run: {summary.windows} windows in {summary.elapsed_s:.1f} s "
             f"({summary.windows_per_s:.2f}/s), stopped: {summary.stop_reason}",
             f"latency ms p50 {fmt(lat and lat.p50)}  p95 {fmt(lat and lat.p95)}   "
             f"mean batch {summary.mean_batch:.2f}   dropped {summary.dropped}   "
             f"reconnects {summary.reconnects}", ""]
    if summary.policy_frames and sum(summary.policy_frames.values()):
        pf = summary.policy_frames
        lines.insert(2, f"selection-network frames: {pf['computed']} computed, {pf['reused']} reused "
                        f"from the feature cache ({100 * pf['reused'] / sum(pf.values()):.0f}%)")
    rows = [["source", "frames", "windows", "processed", "dropped", "reconnects ok/tried", "status"]]
    for s in summary.sources:
        rows.append([s.name, str(s.frames), str(s.windows), str(s.processed), str(s.dropped),
                     f"{s.reconnects}/{s.reconnect_attempts}", s.status])
    lines += _table(rows)
    errors = [f"  {s.name}: {s.error}" for s in summary.sources if s.error]
    if errors:
        lines += ["", "errors:"] + errors
    if summary.configurations:
        n = max(summary.windows, 1)
        rows = [["configuration", "windows", "share"]]
        rows += [[k, str(v), f"{100 * v / n:.1f}%"] for k, v in summary.configurations.items()]
        lines += [""] + _table(rows)
    if summary.outputs:
        lines += ["", "outputs:"] + [f"  {p}" for p in summary.outputs]
    return "\n".join(lines)
