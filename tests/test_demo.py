"""`ada3d demo --quick`: the CI smoke test of the whole pipeline, and re-runs reuse finished steps."""
import json

import pytest
from click.testing import CliRunner

from ada3d_edge.bundle import open_bundle
from ada3d_edge.cli import main

pytestmark = pytest.mark.slow


def test_quick_demo_runs_everything_then_reuses_it(tmp_path):
    work = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--workdir", str(work)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    for step in ("[1/8] synthetic dataset", "[4/8] train joint", "| Ada3D |", "[7/8] run the runtime",
                 "selection net", "Outputs in"):
        assert step in res.output
    ev = json.loads((work / "eval.json").read_text())
    assert {r["method"] for r in ev["rows"]} >= {"Upper", "Random", "Ada3D"}
    bundle = open_bundle(work / "bundle")
    assert len(bundle.masks) == 4
    assert (work / "run.jsonl").read_text().strip() and (work / "overlay.mp4").stat().st_size > 0
    bench = json.loads((work / "bench.json").read_text())
    assert bench["upper"]["latency_ms"]["p50"] > 0 and bench["adaptive"]["latency_ms"]["p50"] > 0
    assert (work / "bench.png").stat().st_size > 0
    line = res.output.strip().splitlines()[-1]  # the demo's result in one line, last
    assert line.startswith("demo: Ada3D ") and "fewer GFLOPs" in line and "x); selection net" in line
    assert bundle.manifest.layout_choice["method"] == "measured"  # the demo exports with --fold measure

    again = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--workdir", str(work)])
    assert again.exit_code == 0, again.output
    assert again.output.count("reusing") >= 6  # data, 3 stages, eval, bundle, bench


def test_demo_without_recipe_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--quick", "--workdir", str(tmp_path), "--recipe",
                                    str(tmp_path / "none.yaml")])
    assert res.exit_code != 0 and "none.yaml" in res.output


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("mine")
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    res = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and str(tmp_path) in res.output and "new or empty folder" in res.output
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_demo_claims_new_and_its_own_folders(tmp_path):
    from ada3d_edge.demo import MARKER, claim_workdir

    claim_workdir(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).is_file()
    (tmp_path / "new" / "eval.json").write_text("{}")
    claim_workdir(tmp_path / "new")  # its own folder again: accepted
    old = tmp_path / "old"  # made by a demo before the marker existed
    (old / "data").mkdir(parents=True)
    (old / "data" / "dataset.json").write_text("{}")
    claim_workdir(old)
    assert (old / MARKER).is_file()
