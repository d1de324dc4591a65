"""The ``configs`` layout: a flat graph per configuration on the bundle's one weights file, one ONNX
Runtime session each; the exporter's measured choice between it and the one ``If`` graph."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ada3d_edge.bundle import BACKBONE_NAME, BundleError, Manifest, open_bundle, read_manifest
from ada3d_edge.cli import main
from ada3d_edge.export import layout_measure
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.export.verify import frame_counts
from ada3d_edge.runtime.backends import make_backend
from ada3d_edge.runtime.backends.ort import OrtBackend
from ada3d_edge.runtime.bench import memory_probe
from ada3d_edge.runtime.predictor import AdaptivePredictor
from export_helpers import assert_backbone_equals, make_checkpoint, make_frames

T, CROP = 4, 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "slow.pt", "slow_tiny", T, CROP, threshold=0.4)


@pytest.fixture(scope="module")
def bundle(ckpt, tmp_path_factory) -> Path:
    return export_bundle(ckpt, tmp_path_factory.mktemp("out") / "bundle", fold_frames="auto", progress=False,
                         ort_layout="configs")


def _graph_and_configs(bundle):
    b = open_bundle(bundle)
    graph, flat = OrtBackend(intra_op_threads=1, layout="graph"), OrtBackend(intra_op_threads=1, layout="configs")
    graph.load_bundle_backbone(b)
    assert flat.load_bundle_backbone(b) is b.manifest.backbone and flat.backbone_layout == "configs"
    return b, graph, flat


def test_every_configuration_equals_the_one_graph(bundle):
    """Per-configuration BN included (the checkpoint is calibrated, so the flat graphs take stage_mask)."""
    b, graph, flat = _graph_and_configs(bundle)
    entry = b.manifest.backbone
    assert sorted(c.mask for c in entry.config_graphs) == b.masks and entry.ort_layout == "configs"
    assert all("stage_mask" in c.inputs for c in entry.config_graphs)
    assert_backbone_equals(b, graph, flat, T, CROP)
    assert "a graph per configuration" in flat.describe()


def test_flat_graphs_have_no_if_and_read_the_one_weights_file(bundle):
    b = open_bundle(bundle)
    weights = b.manifest.backbone.weights.file
    for c in b.manifest.backbone.config_graphs:
        model = onnx.load(str(bundle / c.file), load_external_data=False)
        assert not any(n.op_type == "If" for n in model.graph.node)
        external = [i for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        assert external and {e.value for i in external for e in i.external_data if e.key == "location"} == {weights}
        assert (bundle / c.file).stat().st_size < (bundle / weights).stat().st_size / 4


def test_auto_runs_the_recorded_layout_and_the_predictor_agrees(bundle):
    b = open_bundle(bundle)
    auto = OrtBackend(intra_op_threads=1)
    auto.load_bundle_backbone(b)
    assert auto.layout == "auto" and auto.backbone_layout == "configs"
    clips = [make_frames(i, T, 40, 52) for i in range(4)]
    with AdaptivePredictor(bundle, backend=make_backend("ort", layout="graph", intra_op_threads=1)) as a, \
            AdaptivePredictor(bundle, intra_op_threads=1) as c:
        for frames in clips:
            pa, pc = a.predict(frames), c.predict(frames)
            assert pa.stage_mask == pc.stage_mask and (pa.frame_mask == pc.frame_mask).all()
            np.testing.assert_allclose(pa.scores, pc.scores, rtol=1e-4, atol=1e-5)


def test_upper_memory_probe_loads_only_upper_in_the_configs_layout(bundle):
    import functools

    loaded = []

    class Spy(OrtBackend):
        def load_bundle_backbone(self, bundle, masks=None):
            out = super().load_bundle_backbone(bundle, masks)
            loaded.append(sorted(self._sessions[BACKBONE_NAME].sessions))
            return out

    upper = memory_probe(str(bundle), "upper", functools.partial(Spy, intra_op_threads=1, layout="configs"))
    assert loaded == [[open_bundle(bundle).upper_mask]] and upper["configs"] == 1 and upper["pss_mb"] > 0
    assert make_backend("ort", layout="configs").layout == "configs"


def test_manifest_refuses_bad_layouts_and_incomplete_flat_graphs(bundle):
    data = json.loads((bundle / "manifest.json").read_text())
    bad = json.loads(json.dumps(data))
    bad["backbone"]["ort_layout"] = "tiles"
    with pytest.raises(BundleError, match="ort_layout 'tiles' unknown"):
        Manifest.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["backbone"]["config_graphs"] = bad["backbone"]["config_graphs"][:1]
    with pytest.raises(BundleError, match="one graph per stage mask"):
        Manifest.from_dict(bad)
    bad["backbone"]["config_graphs"] = []
    with pytest.raises(BundleError, match="ort_layout 'configs' but no 'config_graphs'"):
        Manifest.from_dict(bad)
    bad["backbone"]["ort_layout"] = "graph"
    assert Manifest.from_dict(bad).backbone.config_graphs == []  # a bundle without them still reads


def test_configs_layout_on_a_bundle_without_flat_graphs_is_a_clear_error(bundle, tmp_path):
    m = read_manifest(bundle)
    m = dataclasses.replace(m, backbone=dataclasses.replace(m.backbone, config_graphs=[], ort_layout="graph"))
    b = open_bundle(bundle)
    b.manifest = m
    with pytest.raises(FileNotFoundError, match="no per-configuration graphs"):
        OrtBackend(layout="configs").load_bundle_backbone(b)
    auto = OrtBackend()
    auto.load_bundle_backbone(b)
    assert auto.backbone_layout == "graph"


def test_measure_layout_rules(bundle):
    """Estimate over the budget: no probe of the flat graphs; measured over it: graph; within it: timing."""
    b = open_bundle(bundle)
    flat = {c.mask: bundle / c.file for c in b.manifest.backbone.config_graphs}
    graph = bundle / b.manifest.backbone.file
    calls = []

    def memory(pss):
        def probe(d, layout, which):
            calls.append((layout, which))
            return pss[(layout, which)]
        return probe

    tiny = layout_measure.flat_private_mib(flat)
    assert tiny > 0
    c = layout_measure.measure_layout(bundle, graph, flat, 2, T, CROP, budget_s=0.0,
                                      memory=memory({("graph", "upper"): tiny}))
    assert c.layout == "graph" and "private 2D weights" in c.reason and calls == [("graph", "upper")]
    calls.clear()
    c = layout_measure.measure_layout(bundle, graph, flat, 2, T, CROP, budget_s=0.0,
                                      memory=memory({("graph", "upper"): 100.0, ("configs", "all"): 140.0}))
    assert c.layout == "graph" and c.memory_ratio == 1.4 and "1.40x Upper's memory" in c.reason and not c.ms
    c = layout_measure.measure_layout(bundle, graph, flat, 2, T, CROP, budget_s=0.0,
                                      memory=memory({("graph", "upper"): 100.0, ("configs", "all"): 110.0}))
    assert set(c.ms) == {"graph", "configs"} and c.rounds >= 2 and c.frames == list(frame_counts(T))
    assert (c.layout == "configs") == (c.speed_ratio < layout_measure.FASTER_BY)
    assert c.to_dict()["method"] == "measured"


def test_export_measures_the_layout_by_default_and_cli_takes_it(ckpt, tmp_path):
    out = export_bundle(ckpt, tmp_path / "measured", fold_frames="auto", progress=False, measure_seconds=0.0)
    m = read_manifest(out)
    choice = m.layout_choice["ort_layout"]
    assert choice["layout"] == m.backbone.ort_layout and choice["pss_mib"]["graph_upper"] > 0
    assert choice["method"] == "measured" and choice["reason"]
    res = CliRunner().invoke(main, ["export", str(ckpt), "--out", str(tmp_path / "g"), "--fold", "auto",
                                    "--ort-layout", "graph", "--quiet"])
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "g")
    assert m.backbone.ort_layout == "graph" and m.layout_choice["ort_layout"]["method"] == "fixed"
    res = CliRunner().invoke(main, ["export", str(ckpt), "--out", str(tmp_path / "x"), "--ort-layout", "tiles"])
    assert res.exit_code == 2 and "tiles" in res.output and not (tmp_path / "x").exists()


def test_a_failed_memory_probe_keeps_the_one_graph_and_says_why(bundle):
    b = open_bundle(bundle)
    flat = {c.mask: bundle / c.file for c in b.manifest.backbone.config_graphs}

    def broken(d, layout, which):
        raise RuntimeError("memory probe of the graph layout (upper) failed: cannot spawn")

    c = layout_measure.measure_layout(bundle, bundle / b.manifest.backbone.file, flat, 2, T, CROP, memory=broken)
    assert c.layout == "graph" and "memory not measured" in c.reason and "cannot spawn" in c.reason
