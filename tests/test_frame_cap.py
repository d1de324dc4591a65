"""Frame cap (``--cap``): no adaptive clip costs more GFLOPs than ``cap`` x Upper, selection net included."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.frame_cap import apply_frame_cap, max_frames_table
from ada3d_edge.runtime.predictor import AdaptivePredictor
from fake_bundle import make_clip, make_fake_bundle


def test_table_is_the_largest_t_within_the_budget():
    cost = {"00": 1.0, "01": 2.0, "10": 2.0, "11": 3.0}  # GFLOPs a frame
    table = max_frames_table(list(cost), 8, lambda m, t: cost[m] * t + 0.5, policy_gflops=0.3,
                             upper_gflops=3.0 * 8 + 0.5, cap=1.0)
    assert table == {"00": 8, "01": 8, "10": 8, "11": 7}  # 11 on 8 frames + the selection net is over Upper
    assert max_frames_table(["11"], 8, lambda m, t: 3.0 * t, 0.0, 24.0, cap=1.0) == {"11": 8}  # free selection
    assert max_frames_table(["11"], 8, lambda m, t: 3.0 * t, 0.0, 24.0, cap=0.01) == {"11": 1}  # at least one
    with pytest.raises(ValueError, match="must be > 0"):
        max_frames_table(["11"], 8, lambda m, t: t, 0.0, 8.0, cap=0.0)


def test_apply_drops_the_least_probable_kept_frames_later_first_on_ties():
    keep = np.array([[True, True, True, True], [True, False, True, True], [True, True, False, False]])
    probs = np.array([[0.9, 0.6, 0.7, 0.6], [0.9, 0.1, 0.8, 0.95], [0.6, 0.6, 0.1, 0.1]])
    out = apply_frame_cap(keep, probs, ["11", "11", "00"], {"11": 2, "00": 4})
    assert out.tolist() == [[True, False, True, False], [True, False, False, True], [True, True, False, False]]
    assert keep[0].all()  # the input is not changed


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("capb"))


def test_predictor_caps_only_the_clips_over_upper(bundle):
    full = make_clip([True] * 4, "11", frame_values=[255, 200, 150, 255])  # Upper's actions: over with the policy
    light = make_clip([True, False, True, False], "11")
    with AdaptivePredictor(bundle) as plain, AdaptivePredictor(bundle, cap=1.0) as capped:
        assert capped.max_frames == {"00": 4, "01": 4, "10": 4, "11": 3}
        upper = capped.bundle.gflops("11", 4)
        p, c = plain.predict(full), capped.predict(full)
        assert p.frame_mask.tolist() == [True] * 4 and p.gflops > upper
        assert c.frame_mask.tolist() == [True, True, False, True] and c.stage_mask == "11" and c.gflops <= upper
        p, c = plain.predict(light), capped.predict(light)
        assert (p.frame_mask == c.frame_mask).all() and np.allclose(p.scores, c.scores)
        assert "frame cap 1x" in capped.describe() and "frame cap" not in plain.describe()


def test_cli_cap_is_checked_and_reported(bundle, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["bench", str(bundle), "--cap", "0"])
    assert res.exit_code == 2 and "--cap" in res.output
    res = runner.invoke(main, ["run", str(bundle), "--source", "x.mp4", "--cap", "-1"])
    assert res.exit_code == 2 and "--cap" in res.output
    res = runner.invoke(main, ["bench", str(bundle), "--cap", "1", "--repeats", "1", "--warmup", "0", "--clips", "2",
                               "--frames", "1,4", "--no-memory", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "frame cap: at most 1x Upper's GFLOPs a clip" in res.output


def _lut(bundle, tmp_path, selection_cost=0.12, arch="fake_tiny"):
    from ada3d_edge.latency_lut import LatencyLut, write_lut
    from ada3d_edge.masks import all_masks

    per_frame = {"00": 0.15, "01": 0.24, "10": 0.22, "11": 0.25}  # 11 at T=4 is 1.0
    lut = LatencyLut(arch=arch, num_frames=4, crop_size=16, stages=("res4", "res5"),
                     cost={(m, t): per_frame[m] * t for m in all_masks(2) for t in range(1, 5)},
                     selection_cost=selection_cost)
    return write_lut(lut, tmp_path / f"lut_{arch}_{selection_cost}.json")


def test_cap_on_measured_latency_uses_the_table_and_its_selection_cost(bundle, tmp_path):
    from ada3d_edge.latency_lut import read_lut

    path = _lut(bundle, tmp_path)
    assert read_lut(path).selection_cost == 0.12
    with AdaptivePredictor(bundle, cap=1.0, cap_lut=str(path), warmup=False) as p:
        # 0.12 + cost <= 1: 11 -> 3 frames (0.75), 01 -> 3 (0.72; 4 would be 0.96 + 0.12), 10 -> 4 (0.88), 00 -> 4
        assert p.max_frames == {"00": 4, "01": 3, "10": 4, "11": 3}
        assert "frame cap 1x Upper's measured latency" in p.describe()
    with pytest.raises(ValueError, match="no selection_cost"):
        AdaptivePredictor(bundle, cap=1.0, cap_lut=str(_lut(bundle, tmp_path, None)), warmup=False)
    with pytest.raises(ValueError, match="arch other"):
        AdaptivePredictor(bundle, cap=1.0, cap_lut=str(_lut(bundle, tmp_path, arch="other")), warmup=False)


def test_cli_cap_lut_errors(bundle, tmp_path):
    runner = CliRunner()
    path = _lut(bundle, tmp_path, arch="other")
    res = runner.invoke(main, ["bench", str(bundle), "--cap-lut", str(path), "--no-memory"])
    assert res.exit_code == 1 and "--cap-lut is the latency table of --cap" in res.output
    res = runner.invoke(main, ["bench", str(bundle), "--cap", "1", "--cap-lut", str(path), "--no-memory"])
    assert res.exit_code == 1 and "the table is for arch other" in res.output and "Traceback" not in res.output
