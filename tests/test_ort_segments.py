"""`--ort-layout segments`: the ort backend chains the bundle's segment files instead of running the
one `If` graph; every configuration gives the graph's (and so PyTorch's) logits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ada3d_edge.bundle import BACKBONE_NAME, open_bundle
from ada3d_edge.cli import main
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.runtime.app import RunOptions, run_streams
from ada3d_edge.runtime.backends import make_backend
from ada3d_edge.runtime.backends.ort import OrtBackend
from ada3d_edge.runtime.predictor import AdaptivePredictor, stage_mask_feed
from export_helpers import assert_backbone_equals, make_checkpoint, make_frames

T, CROP = 4, 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "slow.pt", "slow_tiny", T, CROP, threshold=0.4)
    return export_bundle(ckpt, tmp_path_factory.mktemp("out") / "bundle", fold_frames="auto", progress=False)


def _backends(bundle):
    b = open_bundle(bundle)
    graph, chain = OrtBackend(intra_op_threads=1), OrtBackend(intra_op_threads=1, layout="segments")
    graph.load(BACKBONE_NAME, b.root / b.manifest.backbone.file,
               {"ort_session": {"enable_mem_pattern": False}})
    assert chain.load_bundle_backbone(b) is b.manifest.backbone and chain.chains_segments
    return b, graph, chain


def test_every_configuration_equals_the_one_graph(bundle):
    """Per-configuration BN tables included: the checkpoint is calibrated, so pieces take stage_mask."""
    b, graph, chain = _backends(bundle)
    assert any("stage_mask" in v.inputs for s in b.manifest.backbone.segments for v in s.variants)
    assert_backbone_equals(b, graph, chain, T, CROP)
    assert chain.input_names(BACKBONE_NAME) == ["clip", "stage_mask"]
    assert "segment files chained" in chain.describe()
    with pytest.raises(ValueError, match="takes inputs"):
        chain.run(BACKBONE_NAME, {"stage_mask": stage_mask_feed(b.masks[0])})


def test_predictor_on_the_segment_chain_predicts_as_on_the_graph(bundle):
    clips = [make_frames(i, T, 40, 52) for i in range(6)]
    with AdaptivePredictor(bundle, intra_op_threads=1) as a, \
            AdaptivePredictor(bundle, backend=make_backend("ort", layout="segments", intra_op_threads=1)) as b:
        for frames in clips:
            pa, pb = a.predict(frames), b.predict(frames)
            assert pa.stage_mask == pb.stage_mask and (pa.frame_mask == pb.frame_mask).all()
            np.testing.assert_allclose(pa.scores, pb.scores, rtol=1e-4, atol=1e-5)


def test_unknown_layout_and_layout_for_another_backend_are_refused(bundle, tiny_video):
    with pytest.raises(ValueError, match="unknown ONNX Runtime layout 'tiles'"):
        OrtBackend(layout="tiles")
    with pytest.raises(ValueError, match="option of the ort backend"):
        run_streams(str(bundle), [str(tiny_video)], RunOptions(backend="trt", ort_layout="segments"))


def test_run_streams_on_the_segment_chain(bundle, tiny_video, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = run_streams(str(bundle), [str(tiny_video)], RunOptions(ort_layout="segments", threads=1, jsonl=out))
    assert summary.windows > 0 and len(out.read_text().splitlines()) == summary.windows


def test_cli_bench_and_run_take_the_layout(bundle, tiny_video, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["bench", str(bundle), "--ort-layout", "segments", "--repeats", "1", "--warmup", "0",
                               "--clips", "2", "--frames", "1,4", "--no-memory", "--quiet",
                               "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    assert "segment files chained" in json.loads((tmp_path / "b.json").read_text())["machine"]["backend_detail"]
    res = runner.invoke(main, ["bench", str(bundle), "--backend", "torch", "--ort-layout", "segments"])
    assert res.exit_code == 2 and "--ort-layout segments is an option of --backend ort" in res.output
    res = runner.invoke(main, ["run", str(bundle), "--source", str(tiny_video), "--ort-layout", "segments",
                               "--jsonl", str(tmp_path / "r.jsonl")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["run", str(bundle), "--source", str(tiny_video), "--ort-layout", "tiles"])
    assert res.exit_code == 2 and "tiles" in res.output
