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

    again = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--workdir", str(work)])
    assert again.exit_code == 0, again.output
    assert again.output.count("reusing") >= 6  # data, 3 stages, eval, bundle, bench


def test_demo_without_recipe_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--quick", "--workdir", str(tmp_path), "--recipe",
                                    str(tmp_path / "none.yaml")])
    assert res.exit_code != 0 and "none.yaml" in res.output
