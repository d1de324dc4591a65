"""The one-graph backbone (export/shared_graph.py) against today's per-configuration ONNX and PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ada3d_edge.export.onnx_export import export_backbone  # noqa: E402
from ada3d_edge.export.shared_graph import (  # noqa: E402
    ALIGN_MIN_BYTES, CLIP_INPUT, LOGITS_OUTPUT, MASK_INPUT, build_shared_backbone, export_shared_backbone,
    fold_batchnorm, initializer_bytes, mask_array, save_backbone_files, save_segments, save_shared,
    segment_plan)
from ada3d_edge.export.verify import RTOL, frame_counts, ort_session  # noqa: E402
from ada3d_edge.models import build_backbone  # noqa: E402
from ada3d_edge.models.specs import all_masks  # noqa: E402

CROP = 32


def _backbone(arch: str):
    torch.manual_seed(0)
    b = build_backbone(arch, num_classes=5, crop_size=CROP).eval()
    with torch.no_grad():  # BN statistics that are not the identity, so folding them matters
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return b


def _close(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    assert diff <= RTOL * max(1.0, float(np.abs(ref).max())), diff
    return diff


@pytest.fixture(scope="module", params=["slow_tiny", pytest.param("i3d_tiny", marks=pytest.mark.slow)])
def exported(request, tmp_path_factory):
    arch = request.param
    d = tmp_path_factory.mktemp(arch)
    b = _backbone(arch)
    path = export_shared_backbone(b, d / "backbone_shared.onnx", CROP)
    today = {m: export_backbone(b, m, d / f"backbone_{m}.onnx", CROP) for m in all_masks(b.num_stages_3d)}
    return b, path, today


def test_every_configuration_matches_today_and_pytorch(exported):
    b, path, today = exported
    shared = ort_session(path)
    assert [i.name for i in shared.get_inputs()] == [CLIP_INPUT, MASK_INPUT]
    gen = torch.Generator().manual_seed(1)
    t = b.spec.num_frames
    for mask in all_masks(b.num_stages_3d):
        per_config = ort_session(today[mask])
        for frames in frame_counts(t):
            for batch in (1, 2):
                clip = torch.randn(batch, 3, frames, CROP, CROP, generator=gen)
                with torch.no_grad():
                    ref = b(clip, mask).double().numpy()
                got = shared.run([LOGITS_OUTPUT], {CLIP_INPUT: clip.numpy(), MASK_INPUT: mask_array(mask)})[0]
                old = per_config.run([LOGITS_OUTPUT], {CLIP_INPUT: clip.numpy()})[0]
                _close(got, ref)
                _close(got, old.astype(np.float64))


def test_weights_are_stored_once(exported):
    b, path, today = exported
    upper = onnx.load(str(today["1" * b.num_stages_3d]))
    shared = onnx.load(str(path))  # external data loaded: views are copies in memory, counted once
    assert initializer_bytes(shared) <= 1.3 * initializer_bytes(upper)
    weights = path.with_suffix(".weights")  # on disk: graph + weights against one Upper file (issue 13: <= 1.5x)
    assert weights.stat().st_size + path.stat().st_size <= 1.5 * today["1" * b.num_stages_3d].stat().st_size
    # one ``If`` per choice between a segment's variants, not one copy of the network per configuration
    ifs = sum(n.op_type == "If" for n in shared.graph.node)  # nested Ifs sit in else branches
    nested = sum(n.op_type == "If" for n in shared.graph.node for a in n.attribute for n2 in [a.g] for n in n2.node)
    plan = segment_plan(fold_batchnorm(b))
    assert ifs + nested == sum(len(s.variants) - 1 for s in plan)


def test_external_weights_are_page_aligned_and_shared(exported):
    _, path, _ = exported
    model = onnx.load(str(path), load_external_data=False)
    offsets = {}
    for init in model.graph.initializer:
        if init.data_location == init.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            if int(info["length"]) >= ALIGN_MIN_BYTES:
                assert int(info["offset"]) % 4096 == 0
            offsets.setdefault(init.name.split("@")[0], set()).add((info["offset"], info["length"]))
    assert offsets and all(len(v) == 1 for v in offsets.values())  # a view points at its weight's bytes
    assert any("@" in i.name for i in model.graph.initializer)  # 4-D views of 5-D weights (or back)


def test_segment_files_chain_to_the_same_logits(tmp_path):
    b = _backbone("slow_tiny")
    _, segments = build_shared_backbone(b, CROP)
    files = save_segments(segments, tmp_path)
    sessions = {name: [ort_session(tmp_path / f) for f in fs] for name, fs in files.items()}
    assert sorted(p.name for p in tmp_path.glob("*.weights")) == ["segments.weights"]
    clip = torch.randn(2, 3, 4, CROP, CROP, generator=torch.Generator().manual_seed(2))
    for mask in all_masks(b.num_stages_3d):
        x = clip.numpy()
        for seg in segments:
            x = sessions[seg.name][seg.choice[int(mask, 2)]].run(["y"], {"x": x})[0]
        with torch.no_grad():
            _close(x, b(clip, mask).double().numpy())
    json.dumps(files)  # plain data, ready for a manifest


def test_plan_maps_every_mask_to_one_variant_per_segment():
    b = fold_batchnorm(_backbone("i3d_tiny"))
    plan = segment_plan(b, "auto")
    assert [s.name for s in plan] == ["stem", "res2", "res3", "res4", "res5", "head"]
    for seg in plan:
        assert len(seg.choice) == 32 and set(seg.choice) == set(range(len(seg.variants)))
    stem = plan[0]
    assert {v.degrade for v in stem.variants} == {True, False}
    assert len(segment_plan(b, "degraded")[1].variants) == 2  # res2: 3D or 2D, never the folded tail


def test_calibrated_batchnorm_is_refused_without_tables():
    b = _backbone("slow_tiny")
    b.bn_calibrated[1] = True
    with pytest.raises(ValueError, match="per-configuration BatchNorm statistics"):
        fold_batchnorm(b)


def _calibrated(arch: str, calibrated: list[bool]):
    """A backbone with per-configuration BN statistics far from the shared ones, logits of order 1."""
    b = _backbone(arch)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for bn in b.config_bns:
            bn.config_mean.copy_(torch.randn(bn.config_mean.shape, generator=gen) * 0.3)
            bn.config_var.copy_(torch.rand(bn.config_var.shape, generator=gen) * 2.7 + 0.3)
        b.head.proj.weight.normal_(0, 1.0, generator=gen)
        b.bn_calibrated.copy_(torch.tensor(calibrated))
    return b


@pytest.mark.parametrize("arch", ["slow_tiny", pytest.param("i3d_tiny", marks=pytest.mark.slow)])
def test_per_configuration_batchnorm_matches_pytorch_in_both_layouts(tmp_path, arch):
    k = 2 if arch == "slow_tiny" else 5
    calibrated = [i % 3 != 1 for i in range(2 ** k)]  # some configurations keep the shared statistics
    b = _calibrated(arch, calibrated)
    plain = _backbone(arch)
    plain.load_state_dict(b.state_dict())
    plain.bn_calibrated.zero_()
    model, segments = build_shared_backbone(b, CROP)
    info = save_backbone_files(model, segments, tmp_path)
    assert info["per_config_bn"] is True
    assert [MASK_INPUT in i for i in info["segments"][0]["inputs"]] == [True] * len(segments[0].variants)
    assert info["segments"][-1]["inputs"] == [["x"]]  # the head has no BatchNorm
    graph = ort_session(tmp_path / info["graph"])
    chain = [[ort_session(tmp_path / f) for f in s["files"]] for s in info["segments"]]
    gen = torch.Generator().manual_seed(4)
    t = b.spec.num_frames
    masks = all_masks(k) if k == 2 else ["00000", "01010", "10110", "11111"]
    for mask in masks:
        for frames in frame_counts(t):
            for batch in (1, 2):
                clip = torch.randn(batch, 3, frames, CROP, CROP, generator=gen)
                with torch.no_grad():
                    ref = b(clip, mask).double().numpy()
                    shared_stats = plain(clip, mask).double().numpy()
                if calibrated[int(mask, 2)]:  # the test can fail: calibration changes these logits
                    assert np.abs(ref - shared_stats).max() > 100 * RTOL * max(1.0, np.abs(ref).max())
                got = graph.run([LOGITS_OUTPUT], {CLIP_INPUT: clip.numpy(), MASK_INPUT: mask_array(mask)})[0]
                _close(got, ref)
                x = clip.numpy()
                for s, sessions in zip(info["segments"], chain):
                    v = s["choice"][int(mask, 2)]
                    feed = {"x": x, **({MASK_INPUT: mask_array(mask)} if MASK_INPUT in s["inputs"][v] else {})}
                    x = sessions[v].run(["y"], feed)[0]
                _close(x, ref)


def test_uncalibrated_checkpoint_keeps_the_plain_graph(tmp_path):
    model, segments = build_shared_backbone(_backbone("slow_tiny"), CROP)
    info = save_backbone_files(model, segments, tmp_path)
    assert info["per_config_bn"] is False and all(i == ["x"] for s in info["segments"] for i in s["inputs"])
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]  # only the variant tables, no BN tables
    assert len(gathers) == sum(len(seg.variants) > 1 for seg in segments)


def test_temporal_pool_is_refused():
    b = build_backbone("i3d_tiny", num_classes=5, crop_size=CROP, temporal_pool=True)
    with pytest.raises(ValueError, match="temporal_pool"):
        segment_plan(b)


def test_both_layouts_share_one_weights_file(tmp_path):
    b = _backbone("slow_tiny")
    model, segments = build_shared_backbone(b, CROP)
    info = save_backbone_files(model, segments, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.weights")) == [info["weights"]]
    graph = ort_session(tmp_path / info["graph"])
    chain = [[ort_session(tmp_path / f) for f in s["files"]] for s in info["segments"]]
    clip = torch.randn(1, 3, 8, CROP, CROP, generator=torch.Generator().manual_seed(3))
    for mask in all_masks(b.num_stages_3d):
        x = clip.numpy()
        for s, sessions in zip(info["segments"], chain):
            x = sessions[s["choice"][int(mask, 2)]].run(["y"], {"x": x})[0]
        got = graph.run([LOGITS_OUTPUT], {CLIP_INPUT: clip.numpy(), MASK_INPUT: mask_array(mask)})[0]
        with torch.no_grad():
            ref = b(clip, mask).double().numpy()
        _close(x, ref)
        _close(got, ref)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["slow_r50", "i3d_r50"])
def test_full_size_archs_match_pytorch_for_upper_and_all_2d(tmp_path, arch):
    """The real widths and depths at a small crop and T = 4: Upper and all-2D at T' {1, 2, 4}, batch {1, 2}."""
    b = _backbone(arch)
    with torch.no_grad():
        b.head.proj.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(6))  # logits of order 1+
    model, segments = build_shared_backbone(b, CROP, num_frames=4)
    info = save_backbone_files(model, segments, tmp_path)
    del model
    session = ort_session(tmp_path / info["graph"], enable_mem_pattern=False)
    gen = torch.Generator().manual_seed(7)
    k = b.num_stages_3d
    for mask in ("1" * k, "0" * k):
        for frames in frame_counts(4):
            for batch in (1, 2):
                clip = torch.randn(batch, 3, frames, CROP, CROP, generator=gen)
                with torch.no_grad():
                    ref = b(clip, mask).double().numpy()
                _close(session.run([LOGITS_OUTPUT], {CLIP_INPUT: clip.numpy(), MASK_INPUT: mask_array(mask)})[0], ref)


def test_local_weights_get_the_nchwc_layout_and_the_same_outputs(tmp_path):
    """Segments within the local-weights budget hold their weights in their If branches: ORT's NCHWc
    pass then rewrites their folded convs (it looks a weight up in the conv's own graph only), the
    outputs of every configuration stay those of the all-shared graph, and the weights file still
    holds each weight once."""
    from ada3d_edge.export.shared_graph import (_graphs, local_weight_segments, segment_weight_bytes,
                                                segments_within_budget)

    torch.manual_seed(0)
    b = build_backbone("slow_tiny", num_classes=5, num_frames=4, crop_size=CROP, widths=[8, 16, 32, 64]).eval()
    runs, sizes, nchwc = {}, {}, {}
    for budget in (0.0, 0.1, 1.0):
        graph, _ = build_shared_backbone(b, CROP, 17, "auto", num_frames=4, local_budget=budget)
        if budget == 0.0:
            seg_bytes = segment_weight_bytes(graph)
            assert local_weight_segments(graph) == [] and set(seg_bytes) == {"stem", "res2", "res3", "res4", "res5"}
        else:
            chosen = local_weight_segments(graph)
            assert sum(seg_bytes[s] for s in chosen) <= budget * sum(seg_bytes.values()) + 1
            assert chosen == sorted(seg_bytes, key=seg_bytes.get)[:len(chosen)] and chosen  # smallest first
        path, weights = save_shared(graph, tmp_path / f"b{budget}.onnx")
        sizes[budget] = weights.stat().st_size
        opt = tmp_path / f"opt{budget}.onnx"
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.optimized_model_filepath, so.enable_mem_pattern = 1, str(opt), False
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((2, 3, 4, CROP, CROP)).astype(np.float32)
        runs[budget] = [sess.run(None, {"clip": x[:, :, :t], "stage_mask": mask_array(m)})[0]
                        for m in all_masks(2) for t in (1, 4)]
        model = onnx.load(str(opt), load_external_data=False)
        nchwc[budget] = sum(n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"
                            for g in _graphs(model.graph) for n in g.node)
    assert nchwc[0.0] == 0 < nchwc[0.1] < nchwc[1.0]  # the outer-scope weights get no NCHWc rewrite
    for budget in (0.1, 1.0):
        for got, ref in zip(runs[budget], runs[0.0]):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        assert abs(sizes[budget] - sizes[0.0]) <= 4 * 4096  # the same bytes (alignment may differ)
    with pytest.raises(ValueError, match="budget must be in"):
        segments_within_budget(graph, 1.5)
