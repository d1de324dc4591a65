"""benchmarks/stream_throughput.py: Upper is the forced all-3D, all-frames configuration; a short run on
one loopback stream counts offered, processed and dropped windows (our ffmpeg, stopped by PID)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from fake_bundle import NUM_FRAMES, STAGES, make_clip, make_fake_bundle

from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.testing.loopback import FFMPEG

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stream_throughput.py"


def _module():
    spec = importlib.util.spec_from_file_location("stream_throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_upper_predictor_forces_every_frame_and_every_stage_3d(tmp_path: Path) -> None:
    mod = _module()
    bundle = make_fake_bundle(tmp_path / "bundle")
    with AdaptivePredictor(bundle, intra_op_threads=1) as pred:
        t, k = pred.manifest.num_frames, pred.manifest.num_stages
        clip = make_clip([False] * t, "0" * k)  # the adaptive policy would keep one frame, every stage 2D
        adaptive = pred.predict(clip)
        (upper,) = mod.UpperPredictor(pred).predict_batch([clip])
    assert adaptive.stage_mask == "0" * k and adaptive.num_frames_kept == 1
    assert upper.stage_mask == "1" * k and upper.num_frames_kept == t and upper.gflops_policy == 0.0
    assert np.isfinite(upper.scores).all()


@pytest.mark.stream
@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")
def test_short_run_on_one_loopback_stream_counts_every_window(tmp_path: Path) -> None:
    mod = _module()
    out = tmp_path / "tp"
    assert mod.main(["--streams", "1", "--duration", "3", "--fps", "25", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    (row,) = res["rows"]
    for mode in ("adaptive", "upper"):
        r = row[mode]
        assert r["processed"] > 0 and r["processed"] + r["dropped"] + r["pending"] == r["offered"]
    assert set(row["upper"]["configurations"]) == {f"{'1' * len(STAGES)} T'={NUM_FRAMES}"}
    text = out.with_suffix(".md").read_text()
    assert "Load average" in text and "generated clip" in text


def _video(path: Path, colour: tuple[int, int, int], frames: int) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for _ in range(frames):
        writer.write(np.full((32, 32, 3), colour, np.uint8))
    writer.release()


def test_clip_from_videos_interleaves_the_classes_of_a_data_list(tmp_path: Path) -> None:
    import cv2

    mod = _module()
    colours = {"a": (250, 0, 0), "b": (0, 0, 250)}  # BGR: a blue, b red
    lines = []
    for label, (name, colour) in enumerate(colours.items()):
        for i in range(3):
            rel = f"val/{name}/{name}_{i}.mp4"
            _video(tmp_path / rel, colour, frames=4 + i)
            lines.append(f"{rel} {label}")
    listing = tmp_path / "val.txt"
    listing.write_text("\n".join(lines) + "\n")
    clip, frames = mod.clip_from_videos(tmp_path / "clip.mp4", listing, per_class=2, size=(48, 40), fps=10)
    assert frames == 4 + 4 + 5 + 5  # videos 0 and 1 of each class
    cap = cv2.VideoCapture(str(clip))
    blue = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (40, 48, 3)
        blue.append(bool(frame[..., 0].mean() > frame[..., 2].mean()))
    assert blue == [True] * 4 + [False] * 4 + [True] * 5 + [False] * 5  # a0, b0, a1, b1


def test_clip_from_videos_refuses_an_empty_list(tmp_path: Path) -> None:
    listing = tmp_path / "val.txt"
    listing.write_text("\n")
    with pytest.raises(SystemExit, match="no 'path label' lines"):
        _module().clip_from_videos(tmp_path / "clip.mp4", listing, 2, (32, 32), 10)


def _row(streams: int, repeat: int, adaptive: float, upper: float, dropped: int = 0) -> dict:
    mode = lambda cap, drop: {"capacity_windows_per_s": cap, "windows_per_s": 10.0, "dropped": drop}
    return {"streams": streams, "repeat": repeat, "adaptive": mode(adaptive, dropped), "upper": mode(upper, 0)}


def test_summary_takes_the_median_ratio_over_the_repeats() -> None:
    line = _module().summary_line(4, [_row(4, 0, 60.0, 50.0), _row(4, 1, 90.0, 100.0, dropped=7),
                                      _row(4, 2, 150.0, 100.0)])
    assert "median of 3 run(s)" in line and "ratio 1.20x (runs: 1.20, 0.90, 1.50)" in line
    assert "adaptive capacity 90.0 windows/s against Upper's 100.0" in line and "dropped 0 vs 0" in line


def test_repeats_below_one_are_refused(capsys) -> None:
    if FFMPEG is None:
        pytest.skip("ffmpeg not installed")
    assert _module().main(["--repeats", "0"]) == 2
    assert "Error: --repeats 0" in capsys.readouterr().err
