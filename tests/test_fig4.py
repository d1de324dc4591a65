"""`ada3d eval --plot`: the paper's Fig. 4 (per-class mean # 3D stages and # frames, static vs motion,
sorted by usage) as a picture; the data it plots, the PNG it writes, and the CLI."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.fig4 import KIND_COLOURS, fig4_data, plot_fig4, usage_of
from ada3d_edge.train.trainer import train_stage
from train_helpers import tiny_recipe

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(per_class, k=2, t=8):
    """An `evaluate` result holding only what the figure reads."""
    kinds = {r["kind"] for r in per_class if r["kind"]}
    by_kind = {kind: {"num_videos": 1,
                      "mean_3d": sum(r["mean_3d"] for r in per_class if r["kind"] == kind) / 2,
                      "mean_frames": sum(r["mean_frames"] for r in per_class if r["kind"] == kind) / 2}
               for kind in kinds}
    return {"per_class": per_class, "by_kind": by_kind, "num_stages": k, "num_frames": t, "arch": "slow_tiny",
            "metric": "top1", "num_videos": 4, "num_clips": 3,
            "rows": [{"method": "Upper", "metric": 100.0}, {"method": "Ada3D", "metric": 97.5}]}


PER_CLASS = [  # listed out of usage order on purpose
    {"class": "spin", "kind": "motion", "mean_3d": 2.0, "mean_frames": 8.0},
    {"class": "red_circle", "kind": "static", "mean_3d": 0.0, "mean_frames": 2.0},
    {"class": "move_left", "kind": "motion", "mean_3d": 1.0, "mean_frames": 6.0},
    {"class": "blue_square", "kind": "static", "mean_3d": 1.0, "mean_frames": 2.0},
]


def test_classes_sorted_by_usage_least_first_with_their_kinds():
    res = _result(PER_CLASS)
    data = fig4_data(res)
    expected = sorted(PER_CLASS, key=lambda r: usage_of(r["mean_3d"], r["mean_frames"], 2, 8))
    assert list(data.classes) == [r["class"] for r in expected]
    assert list(data.usage) == sorted(data.usage) and data.usage[0] < data.usage[-1]
    by_name = {r["class"]: r for r in PER_CLASS}
    for name, kind, s, f in zip(data.classes, data.kinds, data.mean_3d, data.mean_frames):
        assert (kind, s, f) == (by_name[name]["kind"], by_name[name]["mean_3d"], by_name[name]["mean_frames"])
    assert data.kind_means == {k: (v["mean_3d"], v["mean_frames"]) for k, v in res["by_kind"].items()}
    assert (data.num_stages, data.num_frames) == (2, 8) and "97.5" in data.title
    # the usage normalises each axis by its maximum: Upper's usage is 1, no usage 0
    assert usage_of(2, 8, 2, 8) == 1.0 and usage_of(0, 0, 2, 8) == 0.0
    assert usage_of(1, 8, 2, 8) == usage_of(2, 4, 2, 8)


def test_ties_sort_by_name_and_unknown_kinds_are_kept():
    rows = [{"class": n, "kind": None, "mean_3d": 1.0, "mean_frames": 4.0} for n in ("b", "c", "a")]
    data = fig4_data(_result(rows))
    assert data.classes == ("a", "b", "c") and data.kinds == (None, None, None) and data.kind_means == {}


def test_png_is_written_and_valid(tmp_path):
    path = tmp_path / "sub" / "fig4.png"
    assert plot_fig4(_result(PER_CLASS), path) == fig4_data(_result(PER_CLASS))
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 400 and height > 200
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def test_no_per_class_usage_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no per-class usage"):
        plot_fig4(_result([]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_kind_colours_differ():
    assert len({KIND_COLOURS["static"], KIND_COLOURS["motion"], KIND_COLOURS[None]}) == 3


@pytest.fixture(scope="module")
def upper_ckpt(tiny_synth_dataset, tmp_path_factory):
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, tmp_path_factory.mktemp("fig4_run")))
    return train_stage(recipe, "upper", progress=False)


def test_cli_eval_plot(upper_ckpt, tiny_synth_dataset, tmp_path):
    png, js = tmp_path / "fig4.png", tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["eval", str(upper_ckpt), "--data", str(tiny_synth_dataset / "val.txt"),
                                    "--clips", "1", "--quiet", "--json", str(js), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert f"wrote {png}" in res.output and png.read_bytes()[:8] == PNG_MAGIC
    data = fig4_data(json.loads(js.read_text()))  # what was drawn, from the same result
    assert len(data.classes) == 8 and set(data.kinds) == {"static", "motion"}
    assert list(data.usage) == sorted(data.usage)


def test_cli_eval_plot_errors_before_any_work(tiny_synth_dataset, tmp_path, monkeypatch):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    args = ["eval", str(ckpt), "--data", str(tiny_synth_dataset / "val.txt"), "--plot"]
    res = CliRunner().invoke(main, args + [str(tmp_path / "fig4.txt")])
    assert res.exit_code == 2 and "--plot" in res.output and ".png" in res.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any `import matplotlib` now raises ImportError
    res = CliRunner().invoke(main, args + [str(tmp_path / "fig4.png")])
    assert res.exit_code == 1
    assert res.output.splitlines() == ['Error: ada3d eval --plot needs matplotlib: pip install "ada3d-edge[train]"']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
