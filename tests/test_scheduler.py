"""Scheduler, sinks and run_streams with a stand-in predictor; SIGINT on a subprocess; one real-predictor run."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.runtime.app import RunOptions, run_streams
from ada3d_edge.runtime.scheduler import Scheduler, format_summary
from ada3d_edge.runtime.sinks import overlay_path
from ada3d_edge.runtime.sources import SourceError, SourceOptions, SourceReader, parse_source
from stream_helpers import StandInPredictor, free_port, make_clip, stop_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4", num_frames=60)


def test_file_source_ends_cleanly_with_summary(clip, capsys):
    pred = StandInPredictor(num_frames=4, stride=2)
    summary = run_streams(None, [str(clip)], RunOptions(queue_size=50, max_batch=3), predictor=pred).to_json()
    # 60 raw frames, stride 2 -> 30 sampled; T=4, hop=T -> windows at 4, 8, ..., 28 sampled
    assert summary["windows"] == 7 and summary["stop_reason"] == "sources_ended"
    src = summary["sources"][0]
    assert src["status"] == "ended" and src["error"] is None and src["dropped"] == 0
    assert src["frames"] == 60 and src["processed"] == 7
    assert sum(summary["configurations"].values()) == 7
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert max(pred.batches) <= 3
    out = capsys.readouterr().out
    assert "ada3d run: 7 windows" in out and "stopped: sources_ended" in out
    assert "configuration" in out and str(clip) in out  # the console sink + the table


def test_drop_oldest_is_counted_under_a_slow_predictor(clip):
    pred = StandInPredictor(num_frames=4, stride=1, delay_s=0.15)
    summary = run_streams(None, [str(clip)], RunOptions(hop=1, queue_size=2, max_batch=1, jsonl=os.devnull,
                                                        source=SourceOptions(realtime=True)), predictor=pred).to_json()
    src = summary["sources"][0]
    assert src["windows"] == 57  # 60 frames, T=4, hop 1
    assert src["dropped"] > 0 and src["processed"] + src["dropped"] == src["windows"]
    assert summary["dropped"] == src["dropped"] and summary["stop_reason"] == "sources_ended"


def test_file_source_waits_instead_of_dropping_by_default(clip):
    pred = StandInPredictor(num_frames=4, stride=1, delay_s=0.02)
    summary = run_streams(None, [str(clip)], RunOptions(hop=1, queue_size=2, max_batch=1, jsonl=os.devnull),
                          predictor=pred).to_json()
    src = summary["sources"][0]
    assert src["windows"] == 57 and src["dropped"] == 0 and src["processed"] == 57


def test_jsonl_records_and_newest_windows_survive(clip, tmp_path):
    out = tmp_path / "res.jsonl"
    pred = StandInPredictor(num_frames=4, stride=1, delay_s=0.1)
    run_streams(None, [str(clip)], RunOptions(hop=4, queue_size=1, max_batch=1, jsonl=out, topk=1,
                                              source=SourceOptions(realtime=True)), predictor=pred)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and set(records[0]) == {"source", "timestamp", "frame_index", "topk",
                                           "stage_mask", "frames_kept", "latency_ms"}
    assert len(records[0]["topk"]) == 1 and records[0]["topk"][0]["label"] in ("static", "motion")
    assert records[-1]["frame_index"] == 59  # the last window is never the one dropped


def test_max_windows_and_batching_across_sources(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 80)
    b = make_clip(tmp_path / "b.mp4", 80)
    pred = StandInPredictor(num_frames=4, stride=1, delay_s=0.02)
    overlay = tmp_path / "ov.mp4"
    summary = run_streams(None, [str(a), str(b)], RunOptions(hop=2, queue_size=100, max_batch=4, max_windows=10,
                                                            overlay=overlay), predictor=pred).to_json()
    assert summary["windows"] == 10 and summary["stop_reason"] == "max_windows"
    assert max(pred.batches) <= 4 and max(pred.batches) > 1
    assert all(s["processed"] > 0 for s in summary["sources"])  # round-robin: nobody starves
    for i in range(2):
        path = overlay_path(overlay, i, 2)
        assert path.name == f"ov_{i}.mp4"
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape == (384, 384, 3)  # 64 px upscaled x6 to >= 360 rows (legible text)


def test_overlay_has_every_source_frame_at_its_rate_with_the_prediction(clip, tmp_path, capsys):
    out = tmp_path / "ov.mp4"
    summary = run_streams(None, [str(clip)], RunOptions(queue_size=50, overlay=out, jsonl=tmp_path / "r.jsonl"),
                          predictor=StandInPredictor(num_frames=4, stride=2)).to_json()
    cap = cv2.VideoCapture(str(out))
    fps, frames = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 60 and fps == pytest.approx(25.0)  # every frame of the 25 fps source
    assert frames[0].shape[0] >= 360
    src = cv2.VideoCapture(str(clip))
    raw = [src.read()[1] for _ in range(60)]
    src.release()
    big = [cv2.resize(f, (384, 384), interpolation=cv2.INTER_NEAREST) for f in raw]
    corner = (slice(0, 60), slice(0, 200))
    diff = [float(np.abs(a[corner].astype(int) - b[corner].astype(int)).mean()) for a, b in zip(frames, big)]
    assert diff[0] < 2 and diff[-1] > 5  # no label before the first window; the latest one at the end
    assert summary["outputs"] == [str(tmp_path / "r.jsonl"), f"{out} (60 frames)"]
    assert f"outputs:\n  {tmp_path / 'r.jsonl'}\n  {out} (60 frames)" in capsys.readouterr().out


@pytest.mark.parametrize("height", [64, 360, 1080])
def test_overlay_text_scales_with_the_frame(height):
    from ada3d_edge.runtime.sinks import draw_overlay

    frame = np.zeros((height, height * 4 // 3, 3), np.uint8)
    img = draw_overlay(frame, StandInPredictor().predict(np.zeros((4, 8, 8, 3), np.uint8)))
    assert img.shape[0] >= 360
    rows = np.flatnonzero(img.max(axis=(1, 2)) > 0)
    assert 0.06 < (rows.max() - rows.min() + 1) / img.shape[0] < 0.25  # two text lines, same share at any size


def test_duration_limit_and_stop_event(clip):
    pred = StandInPredictor(num_frames=4, stride=1)
    dead = f"http://127.0.0.1:{free_port()}/live.ts"  # never ends on its own with open_attempts None
    t0 = time.monotonic()
    summary = run_streams(None, [dead], RunOptions(duration=1.0, jsonl=os.devnull, source=SourceOptions(
        reconnect_backoff=(0.05, 0.1), open_attempts=None)), predictor=pred).to_json()
    assert summary["stop_reason"] == "duration" and time.monotonic() - t0 < 8
    assert summary["sources"][0]["reconnect_attempts"] >= 1
    stop = threading.Event()
    stop.set()
    summary = run_streams(None, [str(clip)], RunOptions(jsonl=os.devnull), predictor=pred, stop_event=stop).to_json()
    assert summary["stop_reason"] == "stopped"


def test_scheduler_validates_and_formats():
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(StandInPredictor(), [], [], max_batch=0)
    reader = SourceReader(parse_source("0"), num_frames=4)
    text = format_summary(Scheduler(StandInPredictor(), [reader], []).summary("duration", 1.0))
    lines = text.splitlines()
    header = next(ln for ln in lines if ln.startswith("source"))
    row = lines[lines.index(header) + 1]
    assert row.startswith("camera:0") and len(row) == len(header)  # aligned columns


def test_show_without_display_warns_and_falls_back(clip, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    summary = run_streams(None, [str(clip)], RunOptions(show=True, queue_size=50),
                          predictor=StandInPredictor()).to_json()
    captured = capsys.readouterr()
    assert "DISPLAY is not set" in captured.err and summary["windows"] > 0
    assert "[" + str(clip) in captured.out  # console sink took over


def test_cli_missing_source_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path), "--source", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2
    assert "not a camera index" in result.output and "--source" in result.output
    with pytest.raises(SourceError):
        run_streams(None, [str(tmp_path / "x.mp4")], predictor=StandInPredictor())
    with pytest.raises(ValueError, match="no source"):
        run_streams(None, [], predictor=StandInPredictor())


def test_sigint_stops_cleanly_with_summary(clip):
    dead = f"http://127.0.0.1:{free_port()}/live.ts"  # keeps the run alive until the signal
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stream_helpers.py"), str(clip), dead],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # bounded wait for the first line
        assert ready, "no output from the runtime within 30 s"
        first = proc.stdout.readline()
        assert json.loads(first)["source"] == str(clip)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err
    assert "stopped: SIGINT" in err and "ada3d run:" in err and "Traceback" not in err
    assert "reconnects ok/tried" in err


@pytest.fixture(scope="module")
def fake_bundle_dir(tmp_path_factory):
    from fake_bundle import make_fake_bundle

    return make_fake_bundle(tmp_path_factory.mktemp("run") / "bundle")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "ada3d_edge.cli", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_source_in_error_exits_non_zero_saying_which_and_why(fake_bundle_dir, clip):
    result = _run_cli(str(fake_bundle_dir), "--source", "rtsp://127.0.0.1:9/x", "--source", str(clip),
                      "--max-reconnects", "2", "--jsonl", os.devnull, "--open-attempts", "2")
    assert result.returncode == 1, result.stderr
    out, err = result.stdout, result.stderr
    assert "ada3d run: 7 windows" in out  # the file was classified; the dead source still fails the run
    assert "rtsp://127.0.0.1:9/x: never opened after 2 attempt(s)" in out
    assert "connection refused by 127.0.0.1:9" in out
    errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "1 of 2 source(s) ended in error: rtsp://127.0.0.1:9/x" in errors[0]
    assert "Traceback" not in err and "[tcp @" not in err and "WARN" not in err  # no ffmpeg/OpenCV noise


def test_cli_no_window_processed_exits_non_zero(fake_bundle_dir, tmp_path):
    short = make_clip(tmp_path / "short.mp4", num_frames=5)  # T=4 at stride 2 needs 7 frames
    result = _run_cli(str(fake_bundle_dir), "--source", str(short))
    assert result.returncode == 1, result.stderr
    assert "ada3d run: 0 windows" in result.stdout
    assert "Error: no window was processed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_with_real_predictor_on_fake_bundle(clip, tmp_path):
    fake_bundle = pytest.importorskip("fake_bundle", reason="tests/fake_bundle.py not there yet")
    pytest.importorskip("torch", reason="the fake bundle is written with torch")
    pytest.importorskip("onnx", reason="the fake bundle is written with onnx")
    bundle = fake_bundle.make_fake_bundle(tmp_path / "bundle")
    out = tmp_path / "res.jsonl"
    result = CliRunner().invoke(main, ["run", str(bundle), "--source", str(clip), "--jsonl", str(out),
                                       "--queue", "50", "--topk", "2", "--max-windows", "5"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(len(r["stage_mask"]) == 2 for r in records)
    assert all(1 <= r["frames_kept"] <= 4 for r in records)
    assert "stopped: max_windows" in result.output


def test_stream_runtime_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import ada3d_edge.runtime.app, ada3d_edge.runtime.sources\n"
            "import ada3d_edge.runtime.scheduler, ada3d_edge.runtime.sinks\n"
            "assert sys.modules['torch'] is None\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
