"""`--fold measure`: the exporter times each configuration's 2D layouts here and keeps the faster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ada3d_edge.bundle import open_bundle
from ada3d_edge.cli import main
from ada3d_edge.export import fold_choice
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.export.onnx_export import onnx_conv_ranks
from ada3d_edge.masks import all_masks
from export_helpers import make_checkpoint

T, CROP = 4, 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "slow.pt", "slow_tiny", T, CROP, threshold=0.4)


def test_choose_modes_takes_the_lower_mean_ratio_and_keeps_auto_on_ties():
    ms = {"auto": {"11": [1.0, 2.0], "10": [1.0, 2.0], "00": [1.0, 2.0]},
          "none": {"11": [1.0, 2.0], "10": [0.5, 2.2], "00": [1.2, 2.1]}}
    # 10: mean ratio (0.5 + 1.1) / 2 = 0.8 < 1; 00: 1.125 > 1; 11: a tie
    assert fold_choice.choose_modes(ms) == {"11": "auto", "10": "none", "00": "auto"}


def _rank3(bundle, mask: str) -> int:
    return sum(onnx_conv_ranks(bundle.root / v.file).get(3, 0) for _, v in bundle.segment_variants(mask))


def test_measured_export_runs_each_configuration_in_its_chosen_mode(ckpt, tmp_path, monkeypatch):
    """With timings that favour "none" for 00 and 10 only, those two run unfolded (Conv3d(1, k, k)),
    the others as "auto"; every configuration still verifies against PyTorch (export_bundle checks)."""
    wins = {"00", "10"}

    def fake_time_graphs(graphs, num_stages, num_frames, crop, threads, budget_s, timer=None, progress=False, **_):
        frames = [1, 2, 4]
        ms = {mode: {m: [1.0 if (mode == "none") == (m in wins) else 2.0 for _ in frames]
                     for m in all_masks(num_stages)} for mode in graphs}
        return ms, frames, 3

    monkeypatch.setattr(fold_choice, "time_graphs", fake_time_graphs)
    path = export_bundle(ckpt, tmp_path / "b", fold_frames="measure", progress=False)
    bundle = open_bundle(path)
    choice = bundle.manifest.layout_choice
    assert choice["method"] == "measured" and choice["rounds"] == 3
    assert choice["modes"] == {"11": "auto", "10": "none", "01": "auto", "00": "none"}
    assert bundle.manifest.versions["fold_frames"] == "measure"
    # slow_tiny has 17 convs; auto folds 00 entirely (0 rank-3), none folds nothing (17)
    assert _rank3(bundle, "00") == 17 and _rank3(bundle, "10") == 17
    assert _rank3(bundle, "01") == 13 and _rank3(bundle, "11") == 17


def test_real_measurement_times_every_configuration_at_each_frame_count(ckpt, tmp_path):
    path = export_bundle(ckpt, tmp_path / "b", fold_frames="measure", measure_seconds=0, progress=False)
    choice = open_bundle(path).manifest.layout_choice
    assert choice["rounds"] >= fold_choice.MIN_ROUNDS and choice["frames"] == [1, 2, 4]
    assert set(choice["modes"]) == set(all_masks(2)) and set(choice["modes"].values()) <= {"auto", "none"}
    for mode in fold_choice.CANDIDATES:
        assert all(len(v) == 3 and all(x > 0 for x in v) for v in choice["ms"][mode].values())
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["layout_choice"]["timer"] in ("thread CPU time", "wall clock")


def test_fixed_fold_mode_is_recorded_as_fixed(ckpt, tmp_path):
    choice = open_bundle(export_bundle(ckpt, tmp_path / "b", fold_frames="none", progress=False)).manifest.layout_choice
    local, layout = choice.pop("local_weights"), choice.pop("ort_layout")
    assert choice == {"method": "fixed", "mode": "none"} and local["budget"] == 0.1
    assert layout["method"] == "measured" and layout["layout"] in ("graph", "configs")


def test_cli_export_fold_choices(ckpt, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(ckpt), "--out", str(tmp_path / "b"), "--fold", "none", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["export", str(ckpt), "--out", str(tmp_path / "c"), "--measure-seconds", "-1"])
    assert res.exit_code == 2 and "measure-seconds" in res.output
    res = runner.invoke(main, ["export", str(ckpt), "--out", str(tmp_path / "d"), "--fold", "sideways"])
    assert res.exit_code == 2 and "sideways" in res.output
