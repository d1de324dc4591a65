"""Throughput on live streams (issue 14 item 6): windows per second, adaptive vs Upper, drops counted.

N loopback streams: each is ffmpeg serving one generated clip, looped in real time, as MPEG-TS over
HTTP on 127.0.0.1 (``ada3d_edge.testing.loopback``; nothing leaves the machine). ``run_streams`` (what
``ada3d run`` calls) reads them all with one scheduler for ``--duration`` seconds, once with the
bundle's adaptive predictor and once as Upper: the same predictor forced to the all-3D mask on all T
frames for every window (``run_fixed``; no selection network). ``--threshold 0`` would keep every frame
and stage too, but still runs the selection network, so it is not Upper.

Per run: windows processed per second, windows dropped (the queues drop the oldest window when
inference falls behind; dropped + processed + pending = windows offered), latency per window, and the
inference capacity = processed windows per second of busy inference (batch time summed), which is
what the scheduler could sustain with unlimited input. Servers are ours, started with Popen and
stopped by PID in ``finally``.

    OMP_NUM_THREADS=1 python benchmarks/stream_throughput.py --bundle runs/demo/bundle --streams 1,4 \
        --duration 12 --videos runs/demo/data/val.txt --out benchmarks/results/stream_throughput_cpu

Without ``--bundle`` it writes the tiny fake bundle of the tests (tests/fake_bundle.py) to a temporary folder.
With ``--videos`` the served clip is the data list's videos (``--per-class`` of each class, classes
interleaved), so the adaptive policy sees the data's mix of classes; without it, a generated clip.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ada3d_edge.runtime.app import RunOptions, run_streams  # noqa: E402
from ada3d_edge.runtime.bench_report import cpu_model  # noqa: E402
from ada3d_edge.runtime.predictor import AdaptivePredictor  # noqa: E402
from ada3d_edge.runtime.sources import SourceOptions  # noqa: E402
from ada3d_edge.testing.loopback import FFMPEG, free_port, start_http_server, stop_process, wait_port  # noqa: E402


class UpperPredictor:
    """The adaptive predictor forced to Upper: every window on all T frames with every stage 3D."""

    def __init__(self, predictor: AdaptivePredictor) -> None:
        self.inner, self.manifest = predictor, predictor.manifest
        self.keep_all = np.ones(predictor.manifest.num_frames, dtype=bool)
        self.mask = predictor.bundle.upper_mask

    def predict_batch(self, frames_list: Sequence[np.ndarray]) -> list:
        return [self.inner.run_fixed(f, self.keep_all, self.mask) for f in frames_list]


def write_clip(path: Path, frames: int, size: tuple[int, int], fps: float, seed: int = 0) -> Path:
    """An mp4 of moving coloured squares over noise (frames differ, so the policy sees motion)."""
    w, h = size
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    base = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        frame = base.copy()
        x = (i * 3) % max(1, w - h // 3)
        frame[h // 3: 2 * h // 3, x: x + h // 3] = (40 + 4 * i % 200, 200, 90)
        writer.write(frame)
    writer.release()
    return path


def clip_from_videos(path: Path, listing: Path, per_class: int, size: tuple[int, int], fps: float) -> tuple[Path, int]:
    """An mp4 of ``per_class`` videos of every class in ``listing`` (``path label`` lines), classes
    interleaved and each frame resized to ``size``, so a looped stream shows the data set's mix."""
    by_class: dict[str, list[Path]] = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rel, label = line.rsplit(maxsplit=1)
            by_class.setdefault(label, []).append(listing.parent / rel)
    order = [vids[i] for i in range(per_class) for vids in by_class.values() if i < len(vids)]
    if not order:
        raise SystemExit(f"Error: --videos {listing}: no 'path label' lines")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    frames = 0
    for video in order:
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"Error: --videos: cannot read {video}")
        while ok:
            writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
            frames += 1
            ok, frame = cap.read()
        cap.release()
    writer.release()
    return path, frames


def run_once(bundle: str, predictor: Any, clip: Path, streams: int, duration: float, hop: int,
             queue_size: int, max_batch: int) -> dict[str, Any]:
    """N fresh servers (``-listen 1`` serves one client each), one run_streams, servers stopped by PID."""
    procs, urls = [], []
    try:
        for _ in range(streams):
            port = free_port()
            procs.append(start_http_server(clip, port))
            if not wait_port(port, 10):
                raise RuntimeError(f"ffmpeg did not listen on 127.0.0.1:{port} within 10 s")
            urls.append(f"http://127.0.0.1:{port}/live.ts")
        opts = RunOptions(hop=hop, jsonl=os.devnull, duration=duration, queue_size=queue_size, max_batch=max_batch,
                          source=SourceOptions(open_timeout_s=5.0, read_timeout_s=3.0, max_reconnects=3,
                                               realtime=True))
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary: we print ours
            summary = run_streams(bundle, urls, opts, predictor=predictor).to_json()
    finally:
        for p in procs:
            stop_process(p)
    src = summary["sources"]
    processed = sum(s["processed"] for s in src)
    offered = sum(s["windows"] for s in src)
    batch = summary["batch_ms"] or {}
    n_batches = processed / summary["mean_batch"] if summary["mean_batch"] else 0
    busy_s = (batch.get("mean") or 0.0) * n_batches / 1e3
    return {"streams": streams, "windows": summary["windows"], "offered": offered, "processed": processed,
            "dropped": summary["dropped"], "pending": sum(s["pending"] for s in src),
            "drop_fraction": summary["dropped"] / offered if offered else None,
            "elapsed_s": summary["elapsed_s"], "windows_per_s": summary["windows_per_s"],
            "busy_fraction": busy_s / summary["elapsed_s"] if summary["elapsed_s"] else None,
            "capacity_windows_per_s": processed / busy_s if busy_s else None,
            "latency_ms": summary["latency_ms"], "mean_batch": summary["mean_batch"],
            "configurations": summary["configurations"], "reconnects": summary["reconnects"],
            "source_status": [s["status"] for s in src], "errors": [s["error"] for s in src if s["error"]]}


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def summary_line(streams: int, rows: list[dict[str, Any]]) -> str:
    """Medians over the repeats of one stream count: capacity ratio, windows/s and drops of each mode."""
    med = lambda mode, key: statistics.median(r[mode][key] or 0.0 for r in rows)
    ratios = [r["adaptive"]["capacity_windows_per_s"] / r["upper"]["capacity_windows_per_s"] for r in rows
              if r["adaptive"]["capacity_windows_per_s"] and r["upper"]["capacity_windows_per_s"]]
    ratio = f"{statistics.median(ratios):.2f}x (runs: {', '.join(f'{x:.2f}' for x in ratios)})" if ratios else "-"
    return (f"- {streams} stream(s), median of {len(rows)} run(s): adaptive capacity "
            f"{med('adaptive', 'capacity_windows_per_s'):.1f} windows/s against Upper's "
            f"{med('upper', 'capacity_windows_per_s'):.1f}, ratio {ratio}; processed {med('adaptive', 'windows_per_s'):.2f} "
            f"vs {med('upper', 'windows_per_s'):.2f} windows/s, dropped {med('adaptive', 'dropped'):.0f} vs "
            f"{med('upper', 'dropped'):.0f} windows per run.")


def report(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [f"# Stream throughput: adaptive vs Upper on {s['max_streams']} loopback stream(s) at most (CPU)", "",
             f"Written by `benchmarks/stream_throughput.py` (`{res['command']}`).", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, no GPU; ONNX Runtime "
             f"{res['machine']['onnxruntime']}, 1 intra-op thread, OMP_NUM_THREADS={res['machine']['omp_num_threads']}. "
             f"Load average {res['machine']['load_start']} at the start, {res['machine']['load_end']} at the end; the "
             "stream servers (ffmpeg, libx264) and the decoding run on the same cores as inference.", "",
             f"Bundle: `{res['bundle']}` ({res['arch']}, T={res['num_frames']}, stride {res['stride']}, crop "
             f"{res['crop_size']}). Each stream: ffmpeg serving a "
             f"{s.get('clip', str(s['clip_frames']) + '-frame clip')} at {s['clip_size'][0]}x"
             f"{s['clip_size'][1]}, looped in real time at {s['fps']} fps over HTTP on 127.0.0.1; hop "
             f"{s['hop']} sampled frames (T/2), so each stream offers {s['fps']:.0f} / ({res['stride']} x {s['hop']}) = "
             f"{s['fps'] / (res['stride'] * s['hop']):.2f} windows/s; queue {s['queue_size']} windows per stream "
             f"(oldest dropped when full), batches of up to {s['max_batch']}; {s['duration']} s per run.", "",
             "Upper = the same predictor forced to the all-3D mask on all T frames for every window (no selection "
             "network). Capacity = processed windows per second of busy inference (sum of batch times): what "
             "the scheduler sustains when input is unlimited.", "",
             "Repeats alternate which mode runs first (repeat 0: adaptive first).", "",
             "| streams | repeat | mode | offered | processed | dropped | drop % | windows/s | busy % | capacity win/s | "
             "latency p50 ms | p95 ms | configurations |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in res["rows"]:
        for mode in ("adaptive", "upper"):
            r = row[mode]
            lat = r["latency_ms"] or {}
            confs = ", ".join(f"{k}: {v}" for k, v in sorted(r["configurations"].items(), key=lambda kv: -kv[1])[:4])
            lines.append(f"| {row['streams']} | {row.get('repeat', 0)} | {mode} | {r['offered']} | {r['processed']} | {r['dropped']} | "
                         f"{_fmt(r['drop_fraction'] and 100 * r['drop_fraction'], '.1f')} | {_fmt(r['windows_per_s'])} | "
                         f"{_fmt(r['busy_fraction'] and 100 * r['busy_fraction'], '.0f')} | "
                         f"{_fmt(r['capacity_windows_per_s'], '.1f')} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p95'))} | "
                         f"{confs} |")
    lines.append("")
    lines += [summary_line(n, [row for row in res["rows"] if row["streams"] == n]) for n in s["streams"]]
    errors = [e for row in res["rows"] for m in ("adaptive", "upper") for e in row[m]["errors"]]
    if errors:
        lines += ["", "Source errors: " + "; ".join(sorted(set(errors)))]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="Bundle directory (default: the tests' fake bundle, written to a temp dir).")
    ap.add_argument("--streams", default="1,4", help="Stream counts, comma-separated (default 1,4).")
    ap.add_argument("--duration", type=float, default=12.0, help="Seconds per run (default 12).")
    ap.add_argument("--fps", type=float, default=50.0, help="Frame rate each server plays at (default 50).")
    ap.add_argument("--hop", type=int, default=None, help="Hop in sampled frames (default T/2).")
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--clip-size", default="96x72", help="WxH of the served clip (default 96x72).")
    ap.add_argument("--videos", default=None, help="A data list (val.txt): serve its videos, --per-class of each "
                    "class interleaved, instead of the generated clip.")
    ap.add_argument("--per-class", type=int, default=2, help="Videos of each class in the --videos clip (default 2).")
    ap.add_argument("--repeats", type=int, default=1, help="Runs of every stream count, the order of adaptive and "
                    "Upper alternating (default 1); the summary takes medians over them.")
    ap.add_argument("--out", default=None, help="Write OUT.md and OUT.json.")
    args = ap.parse_args(argv)
    if FFMPEG is None:
        print("SKIPPED: ffmpeg not installed (apt-get install ffmpeg)")
        return 0
    counts = [int(c) for c in args.streams.split(",") if c.strip()]
    if args.repeats < 1:
        print(f"Error: --repeats {args.repeats}: give 1 or more", file=sys.stderr)
        return 2
    if not counts or min(counts) < 1:
        print(f"Error: --streams {args.streams!r}: give counts >= 1 like 1,4", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.clip_size.lower().split("x"))
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    with tempfile.TemporaryDirectory(prefix="ada3d_stream_tp_") as tmp:
        bundle = args.bundle
        if bundle is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from fake_bundle import make_fake_bundle

            bundle = str(make_fake_bundle(Path(tmp) / "bundle"))
        predictor = AdaptivePredictor(bundle, backend="ort", intra_op_threads=1, allow_spinning=False, max_batch=args.max_batch)
        m = predictor.manifest
        hop = args.hop or max(1, m.num_frames // 2)
        if args.videos:
            clip, clip_frames = clip_from_videos(Path(tmp) / "clip.mp4", Path(args.videos), args.per_class, (w, h), args.fps)
            clip_desc = f"{clip_frames}-frame clip of {args.per_class} videos per class of `{args.videos}`"
        else:
            clip_frames = int(args.fps * 4)
            clip = write_clip(Path(tmp) / "clip.mp4", frames=clip_frames, size=(w, h), fps=args.fps)
            clip_desc = f"{clip_frames}-frame generated clip (moving squares over noise)"
        rows = []
        try:
            for repeat, n in ((r, n) for r in range(args.repeats) for n in counts):
                row = {"streams": n, "repeat": repeat}
                for mode in (("adaptive", "upper") if repeat % 2 == 0 else ("upper", "adaptive")):
                    pred = predictor if mode == "adaptive" else UpperPredictor(predictor)
                    row[mode] = run_once(bundle, pred, clip, n, args.duration, hop, args.queue_size, args.max_batch)
                    r = row[mode]
                    print(f"repeat {repeat}, {n} stream(s) {mode:>8}: {r['processed']} of {r['offered']} windows, "
                          f"{r['windows_per_s']:.2f}/s, dropped {r['dropped']}, capacity "
                          f"{_fmt(r['capacity_windows_per_s'], '.1f')} windows/s", flush=True)
                rows.append(row)
        finally:
            predictor.close()
    import onnxruntime

    res = {"bundle": str(args.bundle or "tests/fake_bundle.py (temporary)"), "arch": m.arch, "num_frames": m.num_frames,
           "stride": m.stride, "crop_size": m.crop_size,
           "command": "OMP_NUM_THREADS=1 python benchmarks/stream_throughput.py " + " ".join(argv or sys.argv[1:]),
           "settings": {"streams": counts, "max_streams": max(counts), "repeats": args.repeats, "duration": args.duration, "fps": args.fps,
                        "hop": hop, "queue_size": args.queue_size, "max_batch": args.max_batch,
                        "clip_size": [w, h], "clip_frames": clip_frames, "clip": clip_desc},
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
                       "onnxruntime": onnxruntime.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                       "load_start": load_start, "load_end": " ".join(open("/proc/loadavg").read().split()[:3])},
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    text = report(res)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
