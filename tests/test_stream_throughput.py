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
    assert "shared with other agents" in out.with_suffix(".md").read_text()
